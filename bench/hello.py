"""The baseline: a bare FastAPI hello-world, served with the same gunicorn settings."""

from fastapi import FastAPI

app = FastAPI()


@app.get("/")
async def hello() -> dict[str, str]:
    return {"hello": "world"}
