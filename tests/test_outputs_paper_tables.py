"""The paper's own tables are inputs of the report and live outside results/ (issue 16): `rm -rf results`
deletes only outputs, never the committed numbers of Tables I-IV."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from objguided.config import load_config, validate_config
from objguided.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "config").glob("*.yaml"))


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_paper_tables_are_outside_results_and_exist(config):
    table1 = (REPO / load_config(config)["report"]["paper_table1"]).resolve()
    assert not table1.is_relative_to(REPO / "results"), table1
    for name in ("table1.csv", "table2.csv", "table3.csv", "table4.csv", "README.md"):
        assert (table1.parent / name).is_file(), name  # Tables II-IV are read from beside Table I


def test_the_schema_default_is_paper_table1():
    config = yaml.safe_load((REPO / "config" / "test.yaml").read_text())
    config.pop("report", None)
    assert validate_config(config)["report"]["paper_table1"] == "paper/table1.csv"


@pytest.mark.parametrize("path", ["results/paper/table1.csv", "./results/table1.csv"])
def test_a_paper_table_inside_results_is_refused(path):
    config = yaml.safe_load((REPO / "config" / "test.yaml").read_text())
    config["report"] = {"paper_table1": path}
    with pytest.raises(ConfigError, match=r"config: report\.paper_table1: "):
        validate_config(config)


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(), reason="not a git checkout")
def test_gitignore_ignores_all_of_results_and_not_the_paper_tables():
    def ignored(path: str) -> bool:
        return subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=REPO).returncode == 0

    assert ignored("results/report/table1.csv") and ignored("results/paper/table1.csv")
    assert not ignored("paper/table1.csv")
