"""The client's implementation: `_async/` is written by hand (plus the generated `_client.py`), and `_sync/` is
generated from it by unasync (`python -m clients.codegen`)."""
