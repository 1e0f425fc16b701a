"""For every test folder: the shared fixtures (registered below), and the `integration` mark on the tests that
run the project's code in other processes (a devstack, a worker or any other Python child, a browser, an installed
package, an image build), so `make unit` can run the rest alone in a few minutes. Short command-line tools (ffmpeg,
the linters) are no such process: the worker itself calls ffmpeg.

A test is marked through the fixtures below that start such processes, or by hand (`@pytest.mark.integration`)
where it starts one itself (`tests.support.run_handler`, `python -m worker.prefetch`, a `python -c` probe)."""

from __future__ import annotations

import pytest

# Fixtures every folder may use, registered here once so that no test module or conftest imports one by name:
# `tiny_model_env` (tests/support.py), the shared queue `devstack` and the `lb_devstack` load-balancer stack.
pytest_plugins = ["tests.support", "tests.devstack.fixtures", "tests.devstack.lb_fixtures"]

# Fixtures that start a stack of processes or a browser; a test that needs any of them (directly or through
# another fixture) is an integration test.
INTEGRATION_FIXTURES = {"devstack", "lb_devstack", "stack", "browser", "installed", "built_image"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "integration: runs the project in other processes (a devstack, a Python child, a browser, an image)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        in_devstack_tests = "tests/devstack/" in item.path.as_posix()
        if in_devstack_tests or INTEGRATION_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
