"""`python -m app`: the local development server (auto-reload, loopback only);
`python -m app keys ...`: manage API keys (app.keys_cli)."""

from __future__ import annotations

import os
import sys

import uvicorn


def serve() -> None:
    os.environ.setdefault("APP_ENV", "development")
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host="127.0.0.1",
        port=int(os.environ.get("APP_PORT", "8000")),
        reload=True,
    )


def main() -> int:
    if sys.argv[1:2] == ["keys"]:
        from app import keys_cli  # the server needs none of it

        return keys_cli.main(sys.argv[2:])
    serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
