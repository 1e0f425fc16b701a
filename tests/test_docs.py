"""Documentation that is generated from code stays in step with it."""

from pathlib import Path

from worker.config import readme_with_table

REPO = Path(__file__).resolve().parents[1]


def test_readme_configuration_table_matches_worker_config():
    readme = (REPO / "README.md").read_text()
    assert readme_with_table(readme) == readme, "run: python -m worker.config --update-readme"


def test_readme_names_the_two_commands():
    readme = (REPO / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
