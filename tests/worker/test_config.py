"""worker.config: settings read from the environment with their prefixes, validated, and the README's table."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from worker.config import (
    README_MARKERS,
    HttpSettings,
    ModelSettings,
    Settings,
    StorageSettings,
    WorkerSettings,
    readme_with_table,
    settings_markdown,
)

SETTINGS_CLASSES = (ModelSettings, StorageSettings, WorkerSettings, HttpSettings)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """None of the developer's own settings: each test sets what it reads."""
    for key in [k for k in os.environ if k.startswith(("F5TTS_", "BUCKET_", "PORT"))]:
        monkeypatch.delenv(key)


def test_each_group_reads_its_own_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("F5TTS_CONCURRENCY", "3")
    monkeypatch.setenv("F5TTS_DEVICE", "cpu")
    monkeypatch.setenv("BUCKET_NAME", "acme-audio")
    monkeypatch.setenv("BUCKET_URL_EXPIRY_S", "600")
    settings = Settings(
        model=ModelSettings(_env_file=None),
        storage=StorageSettings(_env_file=None),
        worker=WorkerSettings(_env_file=None),
    )
    assert (settings.worker.concurrency, settings.model.device) == (3, "cpu")
    assert (settings.storage.name, settings.storage.url_expiry_s) == ("acme-audio", 600)


def test_a_blank_variable_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """RunPod's console and Hub form send a field left blank as an empty string: it means the default."""
    monkeypatch.setenv("F5TTS_CONCURRENCY", "")
    monkeypatch.setenv("F5TTS_API_KEY", "")
    monkeypatch.setenv("BUCKET_NAME", "")
    monkeypatch.setenv("PORT", "")
    worker = WorkerSettings(_env_file=None)
    assert (worker.concurrency, worker.api_key) == (None, None)
    assert StorageSettings(_env_file=None).name == StorageSettings.model_fields["name"].default
    assert HttpSettings(_env_file=None).port == HttpSettings.model_fields["port"].default


@pytest.mark.parametrize(
    ("variable", "value"),
    [("F5TTS_CONCURRENCY", "0"), ("F5TTS_FETCH_TIMEOUT_S", "-1"), ("F5TTS_ATTN_BACKEND", "xformers")],
)
def test_a_value_out_of_range_fails_at_start_naming_the_field(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    cls = ModelSettings if variable == "F5TTS_ATTN_BACKEND" else WorkerSettings
    with pytest.raises(ValidationError, match=variable.removeprefix("F5TTS_").lower()):
        cls(_env_file=None)


def test_the_table_lists_every_variable_once_with_its_description() -> None:
    rows = settings_markdown().splitlines()[2:]
    variables = [row.split("|")[1].strip().strip("`") for row in rows]
    expected = [
        f"{cls.model_config['env_prefix']}{name.upper()}" for cls in SETTINGS_CLASSES for name in cls.model_fields
    ]
    assert variables == expected and len(set(variables)) == len(variables)
    assert all(row.count("|") == 4 and not row.endswith("| None |") for row in rows)
    # A default the code computes (None) reads "unset"; a literal one is quoted as it is.
    concurrency = next(row for row in rows if row.startswith("| `F5TTS_CONCURRENCY`"))
    assert WorkerSettings.model_fields["concurrency"].default is None and "| unset |" in concurrency
    busy_wait = next(row for row in rows if row.startswith("| `F5TTS_BUSY_WAIT_S`"))
    assert f"| `{WorkerSettings.model_fields['busy_wait_s'].default}` |" in busy_wait


def test_the_readme_table_is_replaced_between_its_markers_only() -> None:
    start, end = README_MARKERS
    readme = f"# Title\n\nBefore.\n{start}\nold table\n{end}\nAfter.\n"
    updated = readme_with_table(readme)
    assert updated.startswith("# Title\n\nBefore.\n") and updated.endswith(f"{end}\nAfter.\n")
    assert "old table" not in updated and settings_markdown() in updated
    assert readme_with_table(updated) == updated
