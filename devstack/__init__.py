"""A local RunPod-compatible stack: queue emulator + real worker processes + local S3.

RunPod cannot run on a developer's machine, and `--rp_serve_api` is only a partial simulation. This package
emulates a RunPod serverless endpoint from both sides, so the real worker loop (`python -m worker.handler`, i.e.
`runpod.serverless.start`) and the real clients meet exactly as they do in production:

- `devstack.emulator`: the ASGI app — the public endpoint API (`/v2/<id>/run`, `/runsync`, `/status`, ...) and the
  worker-facing API the runpod SDK speaks (job take, job stop, job done, stream, ping);
- `devstack.jobs`: the job queue and job life cycle behind it;
- `devstack.s3`, `devstack.workers`, `devstack.model`: the local bucket, the worker processes, the model choice;
- `devstack.stack`: all of it started and stopped together; `devstack.testing.running_stack` for tests;
- `python -m devstack up | demo`: the command line.
"""
