"""Local development server: `python -m app` (auto-reload, loopback only)."""

from __future__ import annotations

import os

import uvicorn


def main() -> None:
    os.environ.setdefault("APP_ENV", "development")
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host="127.0.0.1",
        port=int(os.environ.get("APP_PORT", "8000")),
        reload=True,
    )


if __name__ == "__main__":
    main()
