"""Command line of the local stack.

python -m devstack up [--endpoint-type queue|load_balancer] [--workers N] [--port P] [--model auto|real|tiny]
    Starts local S3, the queue emulator and N workers (`python -m worker.handler`); prints one line
    `ready <endpoint_url> <api_key>` on stdout once jobs are served; stops everything on Ctrl-C or SIGTERM.
    With `--endpoint-type load_balancer`: RunPod's load balancer emulated in front of N workers in http mode;
    `ready <base_url> <api_key>`, where base_url stands for https://<ENDPOINT_ID>.api.runpod.ai.
python -m devstack demo [--out out/hello.wav] [--text "..."]
    Starts the stack, synthesizes one sentence through the client path, writes the WAV, stops the stack.
python -m devstack playground [--endpoint-type queue|load_balancer] [--port P] [--no-browser]
    Starts the stack and `f5tts playground` in front of it (prints `playground <url>`); Ctrl-C stops both.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from devstack.demo import DEFAULT_TEXT, run_demo
from devstack.model import ModelChoiceError, announce_model, choose_model
from devstack.stack import QueueStack, print_ready

if TYPE_CHECKING:
    from devstack.load_balancer import LoadBalancerStack


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m devstack", description="A local RunPod-compatible stack.")
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="run the stack until Ctrl-C or SIGTERM")
    up.add_argument(
        "--endpoint-type",
        choices=["queue", "load_balancer"],
        default="queue",
        help="RunPod endpoint type to emulate (default queue)",
    )
    up.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    up.add_argument("--port", type=int, default=8000, help="emulator port on 127.0.0.1 (default 8000; 0: any free)")
    up.add_argument(
        "--model",
        choices=["auto", "real", "tiny", "none"],
        default="auto",
        help="real weights (configured or cached), the tiny noise model, auto (real if available), or "
        "none (for a --worker-cmd that loads no model)",
    )
    up.add_argument("--worker-cmd", help="run this worker command instead of `python -m worker.handler`")
    up.add_argument("--api-key", help="the API key clients must send (default: a random one, printed)")
    up.add_argument("--quiet", action="store_true", help="do not echo the workers' output")

    demo = commands.add_parser("demo", help="synthesize one sentence end to end and write it to a file")
    demo.add_argument("--out", type=Path, default=Path("out/hello.wav"))
    demo.add_argument("--text", default=DEFAULT_TEXT)
    demo.add_argument("--model", choices=["auto", "real", "tiny"], default="auto")

    play = commands.add_parser("playground", help="the stack, and the browser playground in front of it")
    play.add_argument("--endpoint-type", choices=["queue", "load_balancer"], default="queue")
    play.add_argument("--model", choices=["auto", "real", "tiny"], default="auto")
    play.add_argument("--port", type=int, default=8765, help="playground port on 127.0.0.1 (default 8765)")
    play.add_argument("--no-browser", action="store_true", help="do not open a browser; just print the URL")
    return parser


def _up(args: argparse.Namespace) -> int:
    stop = threading.Event()
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()
        if not stopping:
            raise KeyboardInterrupt  # also interrupts a start-up in progress, which then cleans up after itself

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        model = None if args.model == "none" else choose_model(args.model)
    except (ModelChoiceError, KeyboardInterrupt) as exc:
        print(f"devstack: {str(exc) or 'interrupted'}", file=sys.stderr)
        return 1
    if model is not None:
        announce_model(model, sys.stderr)
    stack_class: type[QueueStack | LoadBalancerStack] = QueueStack
    if args.endpoint_type == "load_balancer":
        from devstack.load_balancer import LoadBalancerStack

        stack_class = LoadBalancerStack
    stack = stack_class(
        workers=args.workers,
        port=args.port,
        model=model,
        worker_cmd=shlex.split(args.worker_cmd) if args.worker_cmd else None,
        api_key=args.api_key,
        echo_logs=None if args.quiet else sys.stderr,
    )
    try:
        stack.start()
        print(f"bucket {stack.bucket} at {stack.s3_endpoint}; workers {stack.workers}", file=sys.stderr, flush=True)
        print_ready(stack)  # a load balancer's endpoint_url is its base_url
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    except (RuntimeError, OSError) as exc:  # RuntimeError: StackError and the load balancer's; OSError: port taken
        print(f"devstack: {exc}", file=sys.stderr)
        return 1
    finally:
        stopping = True
        print("stopping...", file=sys.stderr, flush=True)
        stack.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request, presigned URLs in full: noise
    if args.command == "up":
        return _up(args)
    if args.command == "playground":
        from devstack.playground import run_playground

        try:
            run_playground(args.endpoint_type, args.model, args.port, not args.no_browser)
        except (ModelChoiceError, RuntimeError, OSError) as exc:
            print(f"devstack: {exc}", file=sys.stderr)
            return 1
        return 0
    try:
        run_demo(args.out, args.text, args.model)
    except Exception as exc:
        print(f"demo failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
