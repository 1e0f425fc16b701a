"""Pulumi entry point (Pulumi.yaml: `main: infra/`). Everything lives in `f5tts_infra`; see program.main()."""

import sys
from pathlib import Path

# The program directory holds `f5tts_infra`; the repository root holds `worker` (its config names the worker's
# environment variables). The language host does not put either on sys.path for us.
_INFRA = Path(__file__).resolve().parent
sys.path[:0] = [p for p in (str(_INFRA), str(_INFRA.parent)) if p not in sys.path]

from f5tts_infra.program import main  # noqa: E402 (needs the sys.path above)

main()
