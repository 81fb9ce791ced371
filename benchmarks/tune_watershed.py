"""Watershed tuning time (the full default grid) before and after the speed-up of issue #19.

    .venv/bin/python benchmarks/tune_watershed.py --impl before --set plant   # -> results/tune_watershed_runs/
    .venv/bin/python benchmarks/tune_watershed.py --impl after --set plant --jobs 1
    .venv/bin/python benchmarks/tune_watershed.py --impl before --set plant --profile  # cProfile, first image
    .venv/bin/python benchmarks/tune_watershed.py --set plant --widen   # train's widening after the after grid
    .venv/bin/python benchmarks/tune_watershed.py --report                    # -> results/tune_watershed.md

Each run times ``objguided_methods.watershed.grid_search(images, labels, WatershedConfig())`` (what ``train``
runs: the default grid, 384 combinations on RGB images) on one image set and records the wall and CPU
seconds, the chosen parameters and every combination's proxy score in a JSON file; ``--report`` puts
the runs side by side and checks that both implementations chose the same parameters with the same
grid scores.

Implementations: ``before`` is ``methods/watershed.py`` as committed at ``BEFORE_COMMIT`` (read with
``git show``, imported under another name); ``after`` is the working tree's.

Image sets (the issue's numbers were measured on CVPPP A1 and DSB2018, neither of which is the same
here):

- ``plant``: a stand-in for CVPPP A1 (not available on this machine): 26 RGB images of 500x530 px
  (rows x columns), the CVPPP A1 count, size and channels, made by this project's plant generator
  (``objguided.data.synthetic.generate("plant", 26, (500, 530), seed=0)``: Arabidopsis-like rosettes of
  elliptic leaves with veins and shadows on mottled soil, one instance per leaf).
- ``dsb2018``: 13 real DSB2018 stage1_train images (``--zip``, default the shared mirror), the ids
  evenly spaced over the project's committed test split (``datasets/dsb2018/split/test.txt``), read from
  the zip as the converter reads them (RGB; masks painted into one label map).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

BEFORE_COMMIT = "bc59540"  # the last commit before the speed-up
ZIP = Path("/work/shared/data/dsb2018/stage1_train.zip")
CACHE = Path(os.environ.get("TMPDIR", "/tmp")) / "tune_watershed_sets"
RUNS = REPO / "benchmarks" / "results" / "tune_watershed_runs"
OUT_MD = REPO / "benchmarks" / "results" / "tune_watershed.md"
SETS = {"plant": "26 synthetic plant images, 500x530 RGB (CVPPP A1 stand-in)",
        "dsb2018": "13 real DSB2018 stage1_train images (test split, evenly spaced)"}


def plant_set() -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    from objguided.data.synthetic import generate

    ids, images, labels = [], [], []
    for image_id, image, lab in generate("plant", 26, (500, 530), seed=0):
        ids.append(image_id), images.append(image), labels.append(lab)
    return ids, images, labels


def dsb2018_set(zip_path: Path, n: int = 13) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    from objguided.data.sources.dsb2018 import archive_index, paint, read_image_member, read_mask_member

    test = (REPO / "datasets" / "dsb2018" / "split" / "test.txt").read_text().split()
    ids = [test[k] for k in np.linspace(0, len(test) - 1, n).round().astype(int)]
    images, labels = [], []
    with zipfile.ZipFile(zip_path) as zf:
        index = archive_index(zf, zip_path)
        for image_id in ids:
            image = read_image_member(zf, zip_path, index[image_id]["image"])
            masks = [read_mask_member(zf, zip_path, m, image.shape[:2]) for m in index[image_id]["masks"]]
            images.append(image), labels.append(paint(masks, image.shape[:2])[0].astype(np.int32))
    return ids, images, labels


def load_impl(impl: str):
    """The ``objguided_methods.watershed`` module of ``impl``: the working tree's, or the one at BEFORE_COMMIT."""
    if impl == "after":
        import objguided_methods.watershed as module

        return module
    source = subprocess.run(["git", "-C", str(REPO), "show", f"{BEFORE_COMMIT}:methods/watershed.py"],
                            check=True, capture_output=True, text=True).stdout
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"watershed_{BEFORE_COMMIT}.py"
    # the registry holds the working tree's watershed; the package was named ``methods`` then
    path.write_text(source.replace("\n@register\n", "\n").replace("from methods", "from objguided_methods"))
    spec = importlib.util.spec_from_file_location(f"watershed_{BEFORE_COMMIT}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def image_set(which: str, zip_path: Path) -> tuple[list[str], list[np.ndarray], list[np.ndarray], str]:
    """The set's (ids, images, labels, sha256 of their pixels), cached under CACHE so that every run of a set
    times the same pixels even if the generator changes between runs."""
    path = CACHE / f"{which}.npz"
    if path.is_file():
        with np.load(path) as z:
            n = len(z["ids"])
            ids = list(z["ids"])
            images, labels = [z[f"image{k}"] for k in range(n)], [z[f"labels{k}"] for k in range(n)]
    else:
        ids, images, labels = plant_set() if which == "plant" else dsb2018_set(zip_path)
        CACHE.mkdir(parents=True, exist_ok=True)
        np.savez(path, ids=np.array(ids), **{f"image{k}": a for k, a in enumerate(images)},
                 **{f"labels{k}": a for k, a in enumerate(labels)})
    digest = hashlib.sha256()
    for a in images + labels:
        digest.update(np.ascontiguousarray(a).tobytes())
    return [str(i) for i in ids], images, labels, digest.hexdigest()


def run(impl: str, which: str, jobs: int, zip_path: Path) -> dict:
    ids, images, labels, pixels_sha256 = image_set(which, zip_path)
    module = load_impl(impl)
    cfg = module.WatershedConfig()
    kwargs = {"jobs": jobs} if impl == "after" else {}
    t0, c0 = time.perf_counter(), time.process_time()
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    grid, scores = module.grid_search(images, labels, cfg, **kwargs)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # the worker processes, reaped by now
    cpu_children = (children1.ru_utime + children1.ru_stime) - (children0.ru_utime + children0.ru_stime)
    best = int(np.argmax(scores))
    return {"impl": impl, "set": which, "jobs": jobs if impl == "after" else 1, "images": ids,
            "pixels_sha256": pixels_sha256,
            "shapes": sorted({str(im.shape) for im in images}), "n_combinations": len(grid),
            "wall_s": round(wall, 2), "cpu_s_main_process": round(cpu, 2),
            "cpu_s_workers": round(cpu_children, 2), "chosen": grid[best],
            "proxy_score": float(scores[best]), "scores": [float(v) for v in scores],
            "grid": grid, "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="minutes"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                       f"load average {os.getloadavg()[0]:.1f} at the end",
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}


def profile(impl: str, which: str, zip_path: Path, top: int = 10) -> dict:
    """cProfile of the grid search on the set's first image: the functions that take the most own time."""
    import cProfile
    import pstats

    _, images, labels, pixels_sha256 = image_set(which, zip_path)
    module = load_impl(impl)
    profiler = cProfile.Profile()
    profiler.enable()
    module.grid_search(images[:1], labels[:1], module.WatershedConfig())
    profiler.disable()
    stats = pstats.Stats(profiler).stats
    total = sum(v[2] for v in stats.values())
    rows = sorted(((v[2], v[3], v[1], f"{Path(k[0]).name}:{k[2]}") for k, v in stats.items()), reverse=True)
    return {"impl": impl, "set": which, "profile": True, "pixels_sha256": pixels_sha256, "total_s": round(total, 2),
            "top": [{"function": name, "own_s": round(own, 2), "cumulative_s": round(cum, 2), "calls": calls,
                     "share": round(own / total, 3)} for own, cum, calls, name in rows[:top]]}


def widen_run(which: str, zip_path: Path) -> dict:
    """The after implementation's widening (``widen_best``) from the recorded grid of ``<set>_after_jobs1``."""
    searched = json.loads((RUNS / f"{which}_after_jobs1.json").read_text())
    _, images, labels, pixels_sha256 = image_set(which, zip_path)
    module = load_impl("after")
    cfg = module.WatershedConfig(tune_jobs=1)
    t0, c0 = time.perf_counter(), time.process_time()
    chosen, score, record = module.widen_best(images, labels, cfg, searched["grid"], np.array(searched["scores"]))
    return {"impl": "after", "set": which, "widen": True, "pixels_sha256": pixels_sha256,
            "wall_s": round(time.perf_counter() - t0, 2), "cpu_s": round(time.process_time() - c0, 2),
            "grid_chosen": searched["chosen"], "chosen": chosen, "proxy_score": score, "widening": record}


def _same(a: dict, b: dict) -> str:
    if a.get("pixels_sha256") and b.get("pixels_sha256") and a["pixels_sha256"] != b["pixels_sha256"]:
        return "different images"
    if a["grid"] != b["grid"]:
        return "different grids"
    diff = max(abs(x - y) for x, y in zip(a["scores"], b["scores"]))
    same = "same" if a["chosen"] == b["chosen"] else "DIFFERENT"
    return f"{same} chosen parameters; grid scores {'identical' if diff == 0 else f'differ by up to {diff:.2e}'}"


def report(paths: list[Path]) -> str:
    runs = [json.loads(p.read_text()) for p in paths]
    timed = [r for r in runs if not r.get("profile") and not r.get("widen")]
    lines = ["# Watershed tuning time, before and after the speed-up (issue #19)", "",
             "Recorded by `benchmarks/tune_watershed.py` (its docstring says what each set and implementation is); "
             f"`before` = `methods/watershed.py` at commit {BEFORE_COMMIT}, `after` = the working tree. The default "
             "grid (384 combinations on RGB images). The machine is shared (2 cores, load averages of 10-20 while "
             "these ran), so wall seconds are inflated and noisy; the CPU seconds of the process (a single process "
             "for jobs = 1) are the comparable measure.", "",
             "| set | implementation | processes | wall s | CPU s (main process) | chosen parameters | proxy score "
             "| CPU s (workers) | vs before |",
             "| --- | --- | ---: | ---: | ---: | --- | ---: | ---: | --- |"]
    for r in sorted(timed, key=lambda r: (r["set"], r["impl"] != "before", r["jobs"])):
        before = next((b for b in timed if b["set"] == r["set"] and b["impl"] == "before"), None)
        versus = "" if before is None or r is before else _same(before, r)
        lines.append(f"| {SETS[r['set']]} | {r['impl']} | {r['jobs']} | {r['wall_s']} | {r['cpu_s_main_process']} | "
                     f"`{json.dumps(r['chosen'])}` | {r['proxy_score']:.4f} | {r.get('cpu_s_workers', '-')} | "
                     f"{versus} |")
    lines += ["", "With processes > 1 the images are spread over worker processes (`tune_jobs`), whose CPU time is the "
              "workers column (`-`: not recorded by that run); the main process only waits. On this 2-core machine, "
              "shared by several engineers' jobs, more processes cannot shorten the wall time; on idle cores the wall "
              "time should approach the CPU time divided by the processes, as the images are independent (not "
              "measured here: no idle multi-core machine was available).",
              "", "Each run: " + "; ".join(f"{r['set']} {r['impl']} jobs {r['jobs']}: {r['when']}, {r['machine']}, "
                                           f"OMP_NUM_THREADS={r['omp_num_threads']}" for r in timed)]
    for r in [r for r in runs if r.get("widen")]:
        steps = "; ".join(f"{s['param']} {s['value']}: {s['proxy_score']:.4f}{' (won)' if s['became_best'] else ''}"
                          for s in r["widening"]["steps"]) or "none"
        lines += ["", f"## Grid edges: {SETS[r['set']]}", "",
                  f"The grid's best, `{json.dumps(r['grid_chosen'])}`, had these on an edge: "
                  f"{', '.join(e['param'] + ' ' + e['edge'] for e in r['widening']['at_edge_before']) or 'none'}. "
                  f"`train` then tried (`widen_best`, max_widen 3, {r['wall_s']} s wall, {r['cpu_s']} s CPU): {steps}. "
                  f"Tuned state: `{json.dumps(r['chosen'])}`, proxy {r['proxy_score']:.4f}; still on an edge: "
                  f"{', '.join(e['param'] for e in r['widening']['at_edge_after']) or 'none'} (on the end of its "
                  f"range: {', '.join(e['param'] for e in r['widening'].get('at_bound', [])) or 'none'}). "
                  "So the tuned values of "
                  "`train` differ from before the change wherever widening found a better value outside the grid; "
                  "the grid search itself chose the same parameters (table above)."]
    for r in [r for r in runs if r.get("profile")]:
        lines += ["", f"## Where the time goes: {r['impl']}, first image of the {r['set']} set (cProfile, "
                      f"{r['total_s']} s profiled)", "",
                  "| function | own s | cumulative s | calls | share of own time |",
                  "| --- | ---: | ---: | ---: | ---: |"]
        lines += [f"| `{t['function']}` | {t['own_s']} | {t['cumulative_s']} | {t['calls']} | {t['share']:.0%} |"
                  for t in r["top"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", choices=["before", "after"])
    parser.add_argument("--set", choices=sorted(SETS), dest="which")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes of the after implementation")
    parser.add_argument("--zip", type=Path, default=ZIP)
    parser.add_argument("--report", action="store_true", help="write the markdown from the recorded runs")
    parser.add_argument("--profile", action="store_true", help="cProfile the set's first image instead of timing")
    parser.add_argument("--widen", action="store_true",
                        help="time the after implementation's widening from the recorded after grid of the set")
    args = parser.parse_args()
    if args.report:
        OUT_MD.write_text(report(sorted(RUNS.glob("*.json"))))
        print(OUT_MD)
        return
    if args.widen and args.which:
        result = widen_run(args.which, args.zip)
        (RUNS / f"{args.which}_after_widen.json").write_text(json.dumps(result, indent=1))
        print(result["chosen"], result["widening"]["steps"])
        return
    if not args.impl or not args.which:
        parser.error("give --impl and --set (or --report)")
    if args.profile:
        result, name = profile(args.impl, args.which, args.zip), f"{args.which}_{args.impl}_profile"
        RUNS.mkdir(parents=True, exist_ok=True)
        (RUNS / f"{name}.json").write_text(json.dumps(result, indent=1))
        print(name, result["top"][:3])
        return
    result = run(args.impl, args.which, args.jobs, args.zip)
    RUNS.mkdir(parents=True, exist_ok=True)
    name = f"{args.which}_{args.impl}" + (f"_jobs{args.jobs}" if args.impl == "after" else "")
    (RUNS / f"{name}.json").write_text(json.dumps(result, indent=1))
    print(name, result["wall_s"], "s wall,", result["cpu_s_main_process"], "s CPU;", result["chosen"])


if __name__ == "__main__":
    main()
