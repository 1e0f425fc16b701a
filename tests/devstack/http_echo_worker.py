"""A stand-in worker for the load-balancer emulator's own tests: an HTTP server on PORT with a health check on
PORT_HEALTH, as RunPod runs a load-balancing worker, but no model (the real worker is tested through the same
emulator in tests/clients/test_openai_compat.py and test_load_balancer_e2e.py).

ECHO_READY_AFTER_S: the health check says 204 (initialising) for this long, then 200. ECHO_HEALTH_STATUS: answer
the health check with this status instead (e.g. 500: unhealthy).

WebSockets: `/ws/echo` (and any path under it) first says who it is and what it was given, then echoes every
message; the text
`close <code> <reason>` makes it close with that code, and the code a client closed with is kept for
`GET /ws/closes`. `/ws/refuse` refuses the handshake.
"""

import asyncio
import os
import time

import uvicorn
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, Response, StreamingResponse

STARTED = time.monotonic()
WORKER = os.environ.get("RUNPOD_POD_ID", "?")

app = FastAPI()
health = FastAPI()


@health.get("/ping")
async def ping() -> Response:
    forced = os.environ.get("ECHO_HEALTH_STATUS")
    if forced:
        return Response(status_code=int(forced))
    ready = time.monotonic() - STARTED >= float(os.environ.get("ECHO_READY_AFTER_S", "0"))
    return JSONResponse({"status": "ready"}) if ready else Response(status_code=204)


@app.api_route("/echo/{rest:path}", methods=["GET", "POST", "DELETE"])
async def echo(request: Request, rest: str) -> dict:
    return {
        "worker": WORKER,
        "method": request.method,
        "path": rest,
        "raw_path": request.scope["raw_path"].decode("latin-1"),
        "query": request.url.query,
        "body": (await request.body()).decode(),
        "authorization": request.headers.get("authorization"),
    }


@app.get("/slow")
async def slow(n: int = 3, gap: float = 0.5) -> StreamingResponse:
    async def parts():
        for i in range(n):
            if i:
                await asyncio.sleep(gap)
            yield f"part {i}\n".encode()

    return StreamingResponse(parts(), media_type="text/plain", headers={"X-Worker": WORKER})


CLIENT_CLOSES: list[list[object]] = []


@app.websocket("/ws/echo")
@app.websocket("/ws/echo/{rest:path}")
async def ws_echo(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_json(
        {
            "worker": WORKER,
            "path": websocket.url.path,
            "raw_path": websocket.scope["raw_path"].decode("latin-1"),
            "query": websocket.url.query,
            "authorization": websocket.headers.get("authorization"),
            "xi-api-key": websocket.headers.get("xi-api-key"),
        }
    )
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                CLIENT_CLOSES.append([message.get("code"), message.get("reason")])
                return
            text = message.get("text")
            if text is not None and text.startswith("close "):
                _, code, reason = text.split(" ", 2)
                await websocket.close(int(code), reason)
                return
            if text is not None:
                await websocket.send_text(text)
            else:
                await websocket.send_bytes(message["bytes"])
    except WebSocketDisconnect as exc:
        CLIENT_CLOSES.append([exc.code, exc.reason])


@app.websocket("/ws/refuse")
async def ws_refuse(websocket: WebSocket) -> None:
    await websocket.close(1008)  # before accepting: the handshake gets 403


@app.get("/ws/closes")
async def ws_closes() -> list[list[object]]:
    return CLIENT_CLOSES


async def main() -> None:
    servers = [
        uvicorn.Server(uvicorn.Config(a, host="127.0.0.1", port=int(os.environ[p]), log_level="warning"))
        for a, p in ((app, "PORT"), (health, "PORT_HEALTH"))
    ]
    await asyncio.gather(*(s.serve() for s in servers))


if __name__ == "__main__":
    asyncio.run(main())
