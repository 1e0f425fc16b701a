"""Cut the RunPod REST v2 operations the deployment uses out of RunPod's published OpenAPI 3.1 document.

The output keeps every validation keyword and drops what only documents (descriptions, summaries, examples), so
it is small enough to review and its diff shows real contract changes. The tests' fake RunPod server validates
every request and response against it; a test regenerates it and fails when the committed file differs.

    python infra/runpod_schema/extract.py                      # write runpod-rest-v2.json next to this file
    python infra/runpod_schema/extract.py --check              # exit 1 when the committed file is stale
    python infra/runpod_schema/extract.py --reference PATH     # default: shared/reference/runpod-rest-v2/openapi.json

The default reference (runpod/docs `api-reference-v2/openapi.json`) is in the `shared/` folder beside this clone.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "runpod-rest-v2.json"
# Located from this file, not from devstack.paths.REPO_ROOT (the repository root's one home): this is a
# stdlib-only script, run by its path and loaded by its path in tests/infra/test_runpod_schema.py, and infra/
# (the Pulumi program) does not depend on the local dev stack. HERE is <clone>/infra/runpod_schema.
DEFAULT_REFERENCE = HERE.parents[2] / "shared" / "reference" / "runpod-rest-v2" / "openapi.json"
# Where the reference comes from; bump with the reference.
SOURCE = "runpod/docs api-reference-v2/openapi.json, commit a900806e (2026-08-20)"
# The operations the providers call (infra/f5tts_infra/runpod_rest.py).
OPERATIONS = (
    "listEndpoints",
    "createEndpoint",
    "getEndpoint",
    "updateEndpoint",
    "deleteEndpoint",
    "listRegistries",
    "createRegistry",
    "getRegistry",
    "deleteRegistry",
    "deleteTemplate",
)
METHODS = ("get", "put", "post", "patch", "delete")
ANNOTATIONS = frozenset({"description", "summary", "example", "examples", "tags", "externalDocs", "x-enum-varnames"})
# Objects whose keys are names (properties, status codes, media types...), not keywords: never stripped.
NAME_MAPS = frozenset({"properties", "patternProperties", "responses", "headers", "content", "schemas", "mapping"})


def _strip(node: Any, parent_key: str | None = None) -> Any:
    if isinstance(node, dict):
        named = parent_key in NAME_MAPS
        return {k: _strip(v, k) for k, v in node.items() if named or k not in ANNOTATIONS}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(_refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node))
    return set()


def extract(spec: dict[str, Any], source_sha256: str) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    wanted = set(OPERATIONS)
    for path, item in spec["paths"].items():
        ops = {m: op for m, op in item.items() if m in METHODS and op.get("operationId") in wanted}
        if ops:
            shared = {k: v for k, v in item.items() if k not in METHODS}
            paths[path] = _strip({**shared, **ops}, "path")
            wanted -= {op["operationId"] for op in ops.values()}
    if wanted:
        raise SystemExit(f"operations missing from the reference: {', '.join(sorted(wanted))}")
    # Every component the kept operations reach, transitively.
    components: dict[str, dict[str, Any]] = {}
    pending = _refs(paths)
    while pending:
        ref = pending.pop()
        _hash, _components, kind, name = ref.split("/")
        if name in components.get(kind, {}):
            continue
        node = _strip(spec["components"][kind][name])
        components.setdefault(kind, {})[name] = node
        pending |= _refs(node)
    return {
        "x-generated": "by `python infra/runpod_schema/extract.py` (do not edit); "
        "descriptions and examples removed, validation keywords kept",
        "x-source": SOURCE,
        "x-source-sha256": source_sha256,
        "openapi": spec["openapi"],
        "info": {"title": spec["info"]["title"], "version": spec["info"]["version"]},
        "servers": _strip(spec.get("servers", [])),
        "security": spec.get("security", []),
        "paths": dict(sorted(paths.items())),
        "components": {k: dict(sorted(v.items())) for k, v in sorted(components.items())},
    }


def render(reference: Path) -> str:
    raw = reference.read_bytes()
    return json.dumps(extract(json.loads(raw), hashlib.sha256(raw).hexdigest()), indent=1, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE, help="RunPod's openapi.json")
    parser.add_argument("--check", action="store_true", help="fail when the committed extract is stale")
    args = parser.parse_args(argv)
    fresh = render(args.reference)  # a relative --reference: from the current directory, as any path argument
    if args.check:
        if OUTPUT.read_text() != fresh:
            print(f"{OUTPUT.name} is stale: run python infra/runpod_schema/extract.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(fresh)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
