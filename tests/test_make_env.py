"""Each checkout runs its own code (issue 16): two clones made with ``scripts/make_env.sh`` over one shared
package base each import their own ``objguided``, from any folder, whichever was set up last; and a process
that would run another checkout's code stops before any work and says so."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BASE_RECORD = REPO / ".venv" / ".objguided-base"
NEEDED = ("scripts", "objguided", "methods", "workflow", "datasets", "paper", "Snakefile", "environment.yml",
          "pyproject.toml", "README.md", "requirements.txt", "requirements-peers.txt")

pytestmark = pytest.mark.skipif(not BASE_RECORD.is_file(),
                                reason="this checkout's .venv is not layered over a shared base (make env)")


def clone(dest: Path) -> Path:
    dest.mkdir()
    for name in NEEDED:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, dest / name)
    return dest


def make_env(checkout: Path) -> None:
    env = {**os.environ, "OBJGUIDED_BASE": BASE_RECORD.read_text().strip()}
    subprocess.run(["bash", "scripts/make_env.sh", ".venv"], cwd=checkout, env=env, check=True, timeout=300,
                   capture_output=True)


def imported_from(checkout: Path, *args: str, cwd: str = "/") -> subprocess.CompletedProcess:
    return subprocess.run([str(checkout / ".venv" / "bin" / "python"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def package_dir(checkout: Path, cwd: str = "/") -> Path:
    out = imported_from(checkout, "-c", "import objguided, pathlib; print(pathlib.Path(objguided.__file__).parent)",
                        cwd=cwd)
    assert out.returncode == 0, out.stderr
    return Path(out.stdout.strip())


@pytest.fixture(scope="module")
def two_clones(tmp_path_factory):
    root = tmp_path_factory.mktemp("clones")
    a, b = clone(root / "a"), clone(root / "b")
    make_env(a)
    make_env(b)  # b last: before, this made a's environment run b's code
    return a.resolve(), b.resolve()


def test_each_clone_imports_its_own_code_whichever_was_set_up_last(two_clones):
    a, b = two_clones
    assert package_dir(a) == a / "objguided"
    assert package_dir(b) == b / "objguided"
    assert not (a / ".venv").is_symlink(), ".venv must be the checkout's own, not a link to a shared one"


def test_a_clones_command_runs_its_own_code_from_inside_another_clone(two_clones):
    a, b = two_clones
    out = subprocess.run([str(a / ".venv" / "bin" / "objguided"), "methods"], cwd=b, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert package_dir(a, cwd=str(b)) != a / "objguided"  # `python -c` puts the current folder first: b's code


def test_python_m_from_inside_another_clone_refuses_to_run_its_code(two_clones):
    a, b = two_clones
    out = imported_from(a, "-m", "objguided", "methods", cwd=str(b))
    assert out.returncode == 2
    assert f"belongs to {a}" in out.stderr and f"from {b}" in out.stderr and "python -P" in out.stderr
    assert imported_from(a, "-P", "-m", "objguided", "methods", cwd=str(b)).returncode == 0


def test_a_workflow_job_refuses_another_checkouts_code(two_clones):
    a, b = two_clones
    env = {**os.environ, "OBJGUIDED_CHECKOUT": str(b)}
    out = subprocess.run([str(a / ".venv" / "bin" / "objguided"), "methods"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2 and f"code of {a}" in out.stderr and f"workflow is {b}" in out.stderr


def test_a_second_make_env_keeps_the_environment(two_clones):
    a, _ = two_clones
    python = a / ".venv" / "bin" / "python"
    before = python.lstat().st_mtime_ns
    make_env(a)
    assert python.lstat().st_mtime_ns == before and package_dir(a) == a / "objguided"


@pytest.mark.slow
def test_an_environment_under_a_path_with_a_space_runs_the_workflows_jobs(tmp_path):
    checkout = clone(tmp_path / "my projects")  # shebangs and unquoted interpreter paths both break on this
    make_env(checkout)
    (tmp_path / "work").mkdir()
    config = tmp_path / "work" / "config.yaml"
    config.write_text("datasets: {tiny: {source: synthetic, options: {n_images: 6, image_size: 32}}}\n"
                      "methods: {watershed: {}}\n")
    out = subprocess.run([str(checkout / ".venv" / "bin" / "snakemake"), "-s", str(checkout / "Snakefile"),
                          "--directory", str(tmp_path / "work"), "--configfile", str(config), "--cores", "1",
                          "resources/data/tiny/split.json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "work" / "resources" / "data" / "tiny" / "split.json").is_file()
