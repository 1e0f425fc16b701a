"""`python -m clients.codegen [--check] [--contract FILE] [--package DIR]`; see `clients.codegen`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from clients.codegen import CONTRACT, PACKAGE, differences, generate, write


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clients.codegen", description=__doc__)
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a generated file is out of date")
    parser.add_argument("--contract", type=Path, default=CONTRACT, help="contract JSON Schema (default: %(default)s)")
    parser.add_argument("--package", type=Path, default=PACKAGE, help="f5tts_client package directory (default: %(default)s)")
    args = parser.parse_args(argv)

    files = generate(args.contract, args.package)
    if args.check:
        stale = differences(files, args.package)
        for rel in stale:
            print(f"out of date: {rel}", file=sys.stderr)
        if stale:
            print("run `python -m clients.codegen` (or `make clients`) and commit the result", file=sys.stderr)
            return 1
        return 0
    for path in write(files, args.package):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
