import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def snakemake_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("snakemake")
    if not exe.exists():
        found = shutil.which("snakemake")
        if not found:
            pytest.skip("snakemake is not installed")
        exe = Path(found)
    return [str(exe)]
