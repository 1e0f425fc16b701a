"""Fixtures every test folder shares (defined in tests/support.py)."""

from tests.support import tiny_model_env  # noqa: F401
