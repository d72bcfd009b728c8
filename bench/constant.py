"""The baseline server: a FastAPI endpoint that answers a constant, served like twofa.

``python -m bench.constant --port P`` runs it under uvicorn with the arguments
``twofa serve`` uses (no log config, no access log, no server header), so a figure
measured against it shows what the service adds on top of FastAPI and the server.
"""

from __future__ import annotations

import argparse

from fastapi import FastAPI

__all__ = ["create_app", "main"]


def create_app() -> FastAPI:
    app = FastAPI(title="bench constant")

    @app.post("/v1/constant")
    async def constant() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m bench.constant")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        create_app(),
        host="127.0.0.1",
        port=args.port,
        log_config=None,
        access_log=False,
        server_header=False,
    )


if __name__ == "__main__":
    main()
