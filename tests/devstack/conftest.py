from tests.devstack.fixtures import devstack  # noqa: F401 - the shared real-worker stack
