"""The http serving mode (`F5TTS_SERVE=http`): an ASGI server for RunPod load-balancing endpoints.

Requests reach this server directly (no queue): the response can be raw audio, streamed as it is generated.
It sits on the same `WorkerService` as the queue mode: synthesis, voices and error codes are the service's; this
package only translates HTTP to service calls and back. One module per part (see docs/http.md for the routes):

- `app.py`: `create_app` (the routers, the shared state on `app.state`, the middleware: send timeout, key check,
  body cap; the health check `GET /ping`) and `serve` (uvicorn on `PORT`, and `PORT_HEALTH`; heads bounded by
  `worker/http_wire.py`).
- `openai.py`: OpenAI's speech API (`POST /v1/audio/speech`, `/v1/models`) and the stored voices at
  Kokoro-FastAPI's paths (`/v1/audio/voices`).
- `native.py`: the native job contract, `POST /job`: exactly what the queue mode's handler yields.
- `elevenlabs.py`: ElevenLabs' API under `/elevenlabs` (text-to-speech, with timestamps, voices, models), with
  `elevenlabs_formats.py` (its `output_format`s) and `elevenlabs_alignment.py` (character times).
- `elevenlabs_realtime.py`: ElevenLabs' realtime text input, the WebSocket
  `/elevenlabs/v1/text-to-speech/{voice_id}/stream-input`.
- `errors.py`: the status of each error code, and the error envelope of each API (picked by the request's path).
- `slots.py`: the synthesis slots (at most `F5TTS_CONCURRENCY` at once, a bounded wait, then 503).
- `jobs.py`: driving a service job from a request, the bodies streamed from its items, and the whole-file answers
  stopped when their client leaves.
- `responses.py`: the streamed response that releases what its request holds (slot, job, encoder) however it ends.
- `send_timeout.py`: every send to a client bounded (`F5TTS_SEND_TIMEOUT_S`); a client that does not read is dropped.
- `body_limit.py`: the request body cap (`F5TTS_MAX_REQUEST_BYTES`), chunked bodies counted as they arrive.
- `state.py`: what every router reads from `app.state`.
"""

from worker.http_server.app import create_app, serve

__all__ = ["create_app", "serve"]
