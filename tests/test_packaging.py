"""`pip install .` (not editable) gives a complete, unambiguous package that runs the workflow.

The wheel is built from a copy of the checkout's files (what git tracks or would track), so the test never
writes build folders into the checkout. The installed copy must hold every module of objguided/ and of
methods/ (as the package `objguided_methods`, never a generic top-level `methods`) and the config schema, and
must run `objguided methods` and config/test.yaml's whole DAG from a fresh virtual environment outside the
tree, with the Snakefile of the checkout: Snakemake plans with the checkout's workflow, and every job runs
`python -P -m objguided` of that environment, i.e. the installed copy (objguided.engine.guard lets an installed
copy run any checkout's workflow).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def checkout_files() -> list[str]:
    if not (REPO / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout: the files to package cannot be listed")
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                         capture_output=True).stdout
    return [f for f in out.decode().split("\0") if f and os.path.lexists(REPO / f)]


def copy_checkout(dest: Path) -> Path:
    """The checkout's files (links kept as links: objguided/schemas) under ``dest``."""
    for name in checkout_files():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target, follow_symlinks=False)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("packaging")
    src = copy_checkout(work / "src")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(work / "dist"), str(src)], check=True, capture_output=True, cwd=work)
    (found,) = (work / "dist").glob("objguided-*.whl")
    return found


def python_files(folder: str) -> set[str]:
    return {p.relative_to(REPO / folder).as_posix() for p in (REPO / folder).rglob("*.py")
            if "__pycache__" not in p.parts}


def test_wheel_holds_every_module_and_the_schema_and_no_generic_names(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"objguided", "objguided_methods"}, top
    missing = {f"objguided/{f}" for f in python_files("objguided")} - names
    missing |= {f"objguided_methods/{f}" for f in python_files("methods")} - names
    assert not missing, f"modules left out of the wheel (pyproject.toml [tool.setuptools] packages): {sorted(missing)}"
    schema = zipfile.ZipFile(wheel).read("objguided/schemas/config.schema.yaml")
    assert schema == (REPO / "workflow" / "schemas" / "config.schema.yaml").read_bytes()


def test_no_module_imports_methods_by_its_folder_name():
    """The folder methods/ is the package objguided_methods; `import methods` works only by accident (the
    current folder on sys.path) and would load a second registry beside the installed one."""
    offenders = []
    for name in checkout_files():
        if name.endswith((".py", ".smk")) or name == "Snakefile":
            for k, line in enumerate((REPO / name).read_text(errors="replace").splitlines(), 1):
                words = line.split()
                if words[:2] in (["import", "methods"], ["from", "methods"]) or \
                        (words[:1] in (["import"], ["from"]) and len(words) > 1 and words[1].startswith("methods.")):
                    offenders.append(f"{name}:{k}: {line.strip()}")
    assert not offenders, "import objguided_methods instead:\n" + "\n".join(offenders)


def fresh_venv(path: Path) -> Path:
    """A venv without the project, whose packages are this interpreter's (each site folder added; the one
    holding this checkout's editable install only as a plain path, so that its import hook stays out)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    lines = []
    for entry in map(Path, sys.path):
        if entry.name != "site-packages" or not entry.is_dir():
            continue
        if list(entry.glob("__editable__*objguided*")):
            lines.append(str(entry))
        else:
            lines.append(f"import site; site.addsitedir({str(entry)!r})")
    py = path / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "zz_test_base.pth").write_text("\n".join(dict.fromkeys(lines)) + "\n")
    return py


@pytest.mark.slow
def test_installed_package_runs_methods_and_the_test_dag(wheel, tmp_path):
    py = fresh_venv(tmp_path / "venv")
    subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--no-deps", str(wheel)], check=True,
                   capture_output=True, cwd=tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    where = subprocess.run([str(py), "-P", "-c", "import objguided, objguided_methods, importlib.util; "
                            "print(objguided.__file__); print(objguided_methods.__file__); "
                            "print(importlib.util.find_spec('methods'))"],
                           check=True, capture_output=True, text=True, cwd=outside).stdout.split("\n")
    assert where[0].startswith(str(tmp_path / "venv")) and where[1].startswith(str(tmp_path / "venv")), where
    assert where[2] == "None", "a top-level `methods` package is importable"
    listing = subprocess.run([str(tmp_path / "venv" / "bin" / "objguided"), "methods"], check=True,
                             capture_output=True, text=True, cwd=outside).stdout
    listed = {line.split()[0].rstrip(":") for line in listing.splitlines()}  # "name (gpu): ..." or "name: ..."
    assert {"objguided", "watershed", "mask_rcnn", "dcan"} <= listed, listing
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([str(py), "-P", "-m", "snakemake", "--cores", "2", "--configfile", "config/test.yaml",
                          "--snakefile", str(REPO / "Snakefile"), "--directory", str(outside)],
                         capture_output=True, text=True, cwd=REPO, env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = outside / "results" / "report"
    assert (report / "report.html").is_file() and (report / "table1.csv").is_file()
