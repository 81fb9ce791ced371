"""The DAG through Snakemake itself: config checks, the tiny end-to-end run, the paper plan, lint."""

import subprocess
from pathlib import Path

import pytest
import yaml


def _run(cmd, cwd, timeout=600):
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _snakemake(snakemake_cmd, repo, workdir, configfile, *extra):
    return _run(snakemake_cmd + ["-s", str(repo / "Snakefile"), "--directory", str(workdir),
                                 "--configfile", str(configfile), *extra], cwd=workdir)


def test_bad_config_fails_before_any_job_and_names_the_key(snakemake_cmd, repo, tmp_path):
    config = yaml.safe_load((repo / "config" / "test.yaml").read_text())
    config["datasets"]["tiny-nuclei"]["options"]["n_imgaes"] = 5
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    result = _snakemake(snakemake_cmd, repo, tmp_path, bad, "--cores", "1")
    assert result.returncode != 0
    assert "datasets.tiny-nuclei.options: unknown key 'n_imgaes'" in result.stderr
    assert not (tmp_path / "resources").exists()

    config["datasets"]["tiny-nuclei"]["options"].pop("n_imgaes")
    config["seeds"] = ["zero"]
    bad.write_text(yaml.safe_dump(config))
    result = _snakemake(snakemake_cmd, repo, tmp_path, bad, "--cores", "1")
    assert result.returncode != 0 and "seeds.0" in result.stderr


@pytest.mark.slow
def test_tiny_dag_end_to_end_then_nothing_to_do(snakemake_cmd, repo, tmp_path):
    config = repo / "config" / "test.yaml"
    result = _snakemake(snakemake_cmd, repo, tmp_path, config, "--cores", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    report = tmp_path / "results" / "report"
    for name in ("table1.csv", "table1.md", "fig5.png", "fig5.pdf"):
        assert (report / name).stat().st_size > 0, name
    table = (report / "table1.md").read_text()
    assert "watershed" in table and "tiny-nuclei" in table and "tiny-plant" in table
    run = tmp_path / "results" / "tiny-nuclei" / "watershed" / "default" / "seed0"
    for name in ("model.pt", "predictions.json", "metrics.json", "speed.json"):
        assert (run / name).exists(), name

    again = _snakemake(snakemake_cmd, repo, tmp_path, config, "-n", "--cores", "2")
    assert again.returncode == 0
    assert "Nothing to be done" in again.stdout + again.stderr


def test_paper_config_plans_every_dataset_and_method(snakemake_cmd, repo, tmp_path):
    import objguided_methods as methods
    from objguided.config import load_config

    result = _snakemake(snakemake_cmd, repo, tmp_path, repo / "config" / "paper.yaml", "-n", "--cores", "4",
                        "--resources", "gpu=4")
    assert result.returncode == 0, result.stderr[-3000:]
    config = load_config(repo / "config" / "paper.yaml")
    assert set(config["methods"]) == set(methods.available())  # every registered method is in the paper plan
    assert set(config["datasets"]) == {"dsb2018", "plant", "neural"}
    out = result.stdout + result.stderr
    # the plant and neural data are the user's to supply: absent here, they are left out with a clear warning
    assert "dataset 'plant' is left out of this run" in out and "request it from the providers" in out
    assert "dataset 'neural' is left out of this run" in out and "not public" in out
    runnable = {name: m for name, m in config["methods"].items() if not (methods.get(name).unavailable or
                                                                          (lambda: None))()}
    for name in set(config["methods"]) - set(runnable):  # a peer without its package: left out, said so
        assert f"method '{name}' is left out of this run" in out and "pip install -e .[peers]" in out
    n_runs = sum(len(m["variants"]) for m in runnable.values()) * len(config["seeds"])  # dsb2018 only
    counts = [line.split() for line in out.splitlines() if line.strip().startswith(("train ", "score "))]
    assert {row[0]: int(row[1]) for row in counts} == {"train": n_runs, "score": n_runs}


def test_lint_is_clean(snakemake_cmd, repo, tmp_path):
    result = _run(snakemake_cmd + ["--lint", "--configfile", str(repo / "config" / "demo.yaml")], cwd=repo)
    assert "Lints for" not in result.stdout + result.stderr, result.stdout + result.stderr


def test_demo_config_is_valid_and_plans_all_stages(repo):
    from objguided.config import load_config, runs

    config = load_config(repo / "config" / "demo.yaml")
    assert {d["source"] for d in config["datasets"].values()} == {"synthetic"}
    assert config["seeds"] == [0]  # one seed inside the demo's 10 minutes; config/demo-seeds.yaml runs two (#20)
    per_seed = len(config["datasets"]) * sum(len(m["variants"]) for m in config["methods"].values())
    assert len(runs(config)) == per_seed


SHARED_ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "dsb2018" / "stage1_train.zip"


@pytest.mark.skipif(not SHARED_ARCHIVE.exists(), reason="the DSB2018 mirror in ../shared is not here")
def test_dsb2018_mirror_config_plans_fetch_convert_split(snakemake_cmd, repo, tmp_path):
    result = _snakemake(snakemake_cmd, repo, tmp_path, repo / "config" / "dsb2018-mirror.yaml", "-n", "--cores", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout + result.stderr
    for rule in ("fetch", "convert", "split", "train", "score", "report"):
        assert f"rule {rule}:" in out, rule
