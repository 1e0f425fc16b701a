"""RunPod Hub entry point. The Hub looks for a handler.py and a Dockerfile in .runpod/ (or the repository root);
both lead to the one worker: the Dockerfile here is a link to the repository's Dockerfile.runpod (built from the
repository root, which holds everything it copies), whose image runs `python -m worker.handler`, as this does.

    python .runpod/handler.py [--test_input '{"input": {...}}' | --self-check]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root, which holds `worker`

from worker.handler import main

if __name__ == "__main__":
    main()
