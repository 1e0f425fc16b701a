"""The README tells the truth: its generated table matches the code, its two commands do what it says they do, and
its Python examples call the client's real public API with arguments the signatures accept."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import os
import re
import shlex
import subprocess
import sys
from typing import Any

import f5tts_client
import pytest

from tests.support import REPO_ROOT
from worker.config import readme_with_table

README = (REPO_ROOT / "README.md").read_text()
CLIENT_README = (REPO_ROOT / "clients" / "python" / "README.md").read_text()


def test_readme_configuration_table_matches_worker_config():
    assert readme_with_table(README) == README, "run: python -m worker.config --update-readme"


def _recipe(target: str) -> list[list[str]]:
    """The commands `make <target>` runs (a dry run: nothing is executed), each split into words."""
    # Run as make would be from a shell: under `make test` the inherited MAKELEVEL/MAKEFLAGS add directory lines.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    dry = subprocess.run(
        ["make", "-n", "--no-print-directory", target],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return [shlex.split(line) for line in dry.stdout.splitlines() if line.strip()]


def _python_module(command: list[str]) -> str | None:
    """`worker.handler` for `.venv/bin/python -m worker.handler ...`, else None."""
    return command[2] if len(command) > 2 and command[0].endswith("python") and command[1] == "-m" else None


def test_the_readmes_two_commands_are_make_targets_that_do_what_it_says():
    block = re.search(r"## The two commands\n+```bash\n(.*?)```", README, flags=re.DOTALL)
    assert block, "README.md has lost its 'The two commands' section"
    commands = dict(re.findall(r"^make (\w+)\s+#\s*(.*)$", block.group(1), flags=re.MULTILINE))
    assert set(commands) == {"demo", "test"}

    # make test: the linters, then the whole test suite, last (its exit status is make's).
    modules = [_python_module(c) for c in _recipe("test")]
    assert modules[-1] == "pytest"
    assert modules.index("ruff") < modules.index("pytest") and modules.index("mypy") < modules.index("pytest")
    for checker in ("ruff", "mypy"):
        assert checker in commands["test"], f"the README's `make test` line does not mention {checker}"

    # make demo: the devstack's demo, writing the file the README promises.
    demo = _recipe("demo")[-1]
    assert _python_module(demo) == "devstack" and demo[3] == "demo"
    assert importlib.util.find_spec("devstack.__main__") is not None
    promised = re.search(r"→ (\S+)", commands["demo"])
    assert promised, "the README's `make demo` line names the file it writes"
    assert demo[demo.index("--out") + 1] == promised.group(1)


def _return_type(function: Any) -> Any:
    """What `function` is annotated to return (annotations are strings under `from __future__ import annotations`)."""
    annotation = inspect.signature(function).return_annotation
    return eval(annotation, vars(sys.modules[function.__module__])) if isinstance(annotation, str) else annotation


def _value_type(node: ast.expr, names: dict[str, Any]) -> Any:
    """The type an expression of the example evaluates to, from the client's annotations; checks each call's arguments."""
    if isinstance(node, ast.Name):
        return names[node.id]
    if isinstance(node, ast.Attribute):  # a property, e.g. `client.voices`
        owner = _value_type(node.value, names)
        prop = inspect.getattr_static(owner, node.attr)
        getter = getattr(prop, "func", None) or getattr(prop, "fget", None)
        assert getter is not None, f"{owner.__name__}.{node.attr} is not a property"
        return _return_type(getter)
    if isinstance(node, ast.Call):
        args: list[None] = [None] * len(node.args)
        kwargs: dict[str, None] = {}
        for keyword in node.keywords:
            assert keyword.arg is not None, f"{ast.unparse(node)}: an example spells its arguments out (no **)"
            kwargs[keyword.arg] = None
        if isinstance(node.func, ast.Name):  # a class of the package
            cls = names[node.func.id]
            inspect.signature(cls).bind(*args, **kwargs)
            return cls
        assert isinstance(node.func, ast.Attribute)
        owner = _value_type(node.func.value, names)
        method = getattr(owner, node.func.attr, None)
        assert callable(method), f"{owner.__name__} has no method {node.func.attr}"
        try:
            inspect.signature(method).bind(None, *args, **kwargs)
        except TypeError as exc:
            raise AssertionError(
                f"{owner.__name__}.{node.func.attr}{ast.unparse(node)[len(ast.unparse(node.func)) :]}: {exc}"
            ) from None
        return _return_type(method)
    return type(ast.literal_eval(node))


@pytest.mark.parametrize("text", [README, CLIENT_README], ids=["README.md", "clients/python/README.md"])
def test_the_readme_python_examples_call_the_public_client_api(text):
    # Top-level blocks are the client SDK's examples; indented ones sit in lists about other clients (openai).
    blocks = re.findall(r"^```python\n(.*?)```", text, flags=re.DOTALL | re.MULTILINE)
    assert blocks
    for block in blocks:
        names: dict[str, Any] = {}
        calls = 0
        for statement in ast.parse(block).body:
            if isinstance(statement, ast.ImportFrom):
                assert statement.module == "f5tts_client"
                for alias in statement.names:
                    assert alias.name in f5tts_client.__all__, f"{alias.name} is not public API"
                    names[alias.asname or alias.name] = getattr(f5tts_client, alias.name)
                continue
            if isinstance(statement, ast.With):  # `with Client() as client:` (the clients enter as themselves)
                for item in statement.items:
                    assert isinstance(item.optional_vars, ast.Name), ast.unparse(statement)
                    names[item.optional_vars.id] = _value_type(item.context_expr, names)
                body = statement.body
            else:
                body = [statement]
            for inner in body:
                if isinstance(inner, ast.Assign):
                    assert isinstance(inner.targets[0], ast.Name), ast.unparse(inner)
                    names[inner.targets[0].id] = _value_type(inner.value, names)
                else:
                    assert isinstance(inner, ast.Expr), ast.unparse(inner)
                    _value_type(inner.value, names)
                calls += sum(isinstance(n, ast.Call) for n in ast.walk(inner))
        assert calls >= 2, block
