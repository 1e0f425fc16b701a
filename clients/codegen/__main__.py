"""`python -m clients.codegen [--check] [--contract FILE] [--package DIR]`; see `clients.codegen`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from clients.codegen import CONTRACT, DOCS, PACKAGE, differences, generate, generate_docs, write


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clients.codegen", description=__doc__)
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a generated file is out of date")
    parser.add_argument("--contract", type=Path, default=CONTRACT, help="contract JSON Schema (default: %(default)s)")
    parser.add_argument(
        "--package", type=Path, default=PACKAGE, help="f5tts_client package directory (default: %(default)s)"
    )
    parser.add_argument(
        "--docs", type=Path, default=DOCS, help="API reference with generated tables (default: %(default)s)"
    )
    args = parser.parse_args(argv)

    files = generate(args.contract, args.package)
    docs = generate_docs(args.contract, args.docs)
    if args.check:
        stale = differences(files, args.package)
        if docs != args.docs.read_text():
            stale.append(f"{args.docs} (generated tables)")
        for rel in stale:
            print(f"out of date: {rel}", file=sys.stderr)
        if stale:
            print("run `python -m clients.codegen` (or `make clients`) and commit the result", file=sys.stderr)
            return 1
        return 0
    for path in write(files, args.package):
        print(f"wrote {path}")
    if docs != args.docs.read_text():
        args.docs.write_text(docs)
        print(f"wrote {args.docs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
