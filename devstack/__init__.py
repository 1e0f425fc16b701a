"""A local RunPod-compatible stack: a queue or load-balancer emulator + real worker processes + local S3.

RunPod cannot run on a developer's machine, and `--rp_serve_api` is only a partial simulation. This package
emulates a RunPod serverless endpoint from both sides, so the real worker loop (`python -m worker.handler`, i.e.
`runpod.serverless.start`) and the real clients meet exactly as they do in production:

- `devstack.emulator`: the ASGI app — the public endpoint API (`/v2/<id>/run`, `/runsync`, `/status`, ...) and the
  worker-facing API the runpod SDK speaks (job take, job stop, job done, stream, ping);
- `devstack.jobs`: the job queue and job life cycle behind it;
- `devstack.load_balancer`: a load-balancing endpoint instead (workers in HTTP mode behind a proxy with health
  checks, as RunPod routes them) and its `LoadBalancerStack`;
- `devstack.s3`, `devstack.workers`, `devstack.model`: the local bucket, the worker processes, the model choice;
- `devstack.serving`: the loopback server thread both emulators run in; `devstack.paths`: the repository root;
- `devstack.local_stack`: what both stacks share; `devstack.stack`: the queue stack (`QueueStack`), all of it
  started and stopped together; `devstack.testing.running_stack` for tests;
- `devstack.demo`, `devstack.playground`: `make demo` and `make playground`;
- `python -m devstack up | demo | playground`: the command line.
"""
