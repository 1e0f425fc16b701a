"""Where the devstack (and the bench, which runs on it) finds this checkout: the one definition of the
repository root."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
