"""For every test folder: the shared fixtures (defined in tests/support.py), and the `integration` mark on the
tests that start processes (a devstack, a browser, an installed package, an image build), so `make unit` can run
the rest alone in a few minutes."""

from __future__ import annotations

import pytest

from tests.support import tiny_model_env  # noqa: F401 - a fixture, found by name

# Fixtures that start a stack of processes or a browser; a test that needs any of them (directly or through
# another fixture) is an integration test.
INTEGRATION_FIXTURES = {"devstack", "lb_devstack", "stack", "browser", "installed", "built_image"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "integration: starts processes (a devstack, a browser, an image build)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        in_devstack_tests = "tests/devstack/" in item.path.as_posix()
        if in_devstack_tests or INTEGRATION_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
