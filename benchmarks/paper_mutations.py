"""Hand mutations: each departure from the paper / the authors' code that issue 17 lists (and a few
more) is applied to ``objguided/models`` one at a time, the paper-pin tests are run, and the file is
restored byte for byte from a saved copy. A departure that no test fails is a hole in the pins.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/paper_mutations.py [--only ID ...] [--no-golden] \
        [--out FILE.md]

Everything happens in a private copy of the tree (``objguided``, ``methods``, ``tests``,
``pyproject.toml`` copied to a temporary folder, the tests run there with that folder first on the
path): the shared working tree is never edited, so other runs that import ``objguided.models`` in the
meantime see the real code. Source mutations are plain text replacements (each must match exactly
once); the augmentation's is a run-time patch. After each run the mutated file is restored from a copy
taken before and its bytes are checked.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
M = "objguided/models/"

#: (id, departure, file, old, new)
SOURCE = [
    ("guidance", "ROI branch crops the raw backbone (layer1-3) instead of the decoder's c2-c4", M + "network.py",
     "return c2, [self.seg.c0_conv(images), c1, c2, c3, c4]", "return c2, [self.seg.c0_conv(images), c1, l1, l2, l3]"),
    ("wh_weight", "size-loss weight 0.1 -> 1", M + "config.py", "wh_weight: float = 0.1", "wh_weight: float = 1.0"),
    ("seg_weight", "seg-loss weight 2 -> 1", M + "config.py", "seg_weight: float = 2.0", "seg_weight: float = 1.0"),
    ("point_weight", "point-loss weight 1 -> 0.5", M + "config.py",
     "point_weight: float = 1.0", "point_weight: float = 0.5"),
    ("off_weight_swap", "offset term weighted by the size weight", M + "network.py",
     "cfg.off_weight * off", "cfg.wh_weight * off"),
    ("hm_bias", "heatmap bias starts at 0 instead of -2.19", M + "layers.py",
     "nn.init.constant_(self.hm[-1].bias, -2.19)", "nn.init.constant_(self.hm[-1].bias, 0.0)"),
    ("affine_in", "affine InstanceNorm in the seg branch", M + "layers.py",
     "mk = lambda c: nn.InstanceNorm2d(c)  #", "mk = lambda c: nn.InstanceNorm2d(c, affine=True)  #"),
    ("in_running", "InstanceNorm with running statistics", M + "layers.py",
     "mk = lambda c: nn.InstanceNorm2d(c)  #", "mk = lambda c: nn.InstanceNorm2d(c, track_running_stats=True)  #"),
    ("labels_pred", "point labels taken from the prediction", M + "network.py",
     "gt = point_sample(target, pts)[:, 0]", "gt = point_sample(torch.sigmoid(logits).detach(), pts)[:, 0]"),
    ("labels_hard", "point labels hardened to 0/1", M + "network.py",
     "gt = point_sample(target, pts)[:, 0]", "gt = (point_sample(target, pts)[:, 0] > 0.5).float()"),
    ("labels_hard_targets", "ROI and point targets hardened to 0/1 (nearest GT, not bilinear)", M + "network.py",
     "for (b, j), lv in zip(members, levels)]).unsqueeze(1).to(dev)",
     "for (b, j), lv in zip(members, levels)]).unsqueeze(1).to(dev).round()"),
    ("unc_logits", "uncertainty computed on logits", M + "network.py",
     "pts = select_uncertain_points(torch.sigmoid(logits), cfg.k,", "pts = select_uncertain_points(logits, cfg.k,"),
    ("head1_no_e2", "refinement head 1 ignores e2 (cat(e1, e1))", M + "network.py",
     "torch.cat([f0, f1], 1)", "torch.cat([f0, f0], 1)"),
    ("head1_no_e1", "refinement head 1 ignores e1 (cat(e2, e2))", M + "network.py",
     "torch.cat([f0, f1], 1)", "torch.cat([f1, f1], 1)"),
    ("head1_swapped", "refinement head 1 reads cat(e2, e1)", M + "network.py",
     "torch.cat([f0, f1], 1)", "torch.cat([f1, f0], 1)"),
    ("head0_on_e2", "refinement head 0 reads e2 instead of e1", M + "network.py",
     "self.seg.point_head0(f0)", "self.seg.point_head0(point_sample(fused[1], pts))"),
    ("train_box_narrow", "training ROI boxes one pixel narrower than at inference", M + "roi.py",
     "b[:, 2] - b[:, 0] + 1, b[:, 3] - b[:, 1] + 1],", "b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]],"),
    ("target_wh_narrow", "size targets one pixel narrower (inference boxes narrower than training)", M + "targets.py",
     "bw = np.float32(x2 - x1 + 1) / np.float32(r)", "bw = np.float32(x2 - x1) / np.float32(r)"),
    ("enlarge", "ROI enlargement 1.1 -> 1.0", M + "config.py", "roi_enlarge: float = 1.1", "roi_enlarge: float = 1.0"),
    ("cat_order", "combination module concatenates [up, skip]", M + "layers.py",
     "torch.cat([x_skip, self.up(up)], 1)", "torch.cat([self.up(up), x_skip], 1)"),
    ("wh_kernel", "size head 3x3 instead of 7x7", M + "layers.py",
     "self.wh = detection_head(c_in, width, 2, 7, 7)", "self.wh = detection_head(c_in, width, 2, 3, 1)"),
    ("focal_beta", "focal loss beta 4 -> 2", M + "losses.py", "(1 - gt) ** 4", "(1 - gt) ** 2"),
    ("l1_norm", "L1 losses divided by objects, not 2 x objects", M + "losses.py",
     "return loss / (m.sum() + 1e-4)", "return loss / (m.sum() / 2 + 1e-4)"),
    ("k_beta", "refinement keeps floor(0.5 N) of 3N", M + "config.py", "beta: float = 0.75", "beta: float = 0.5"),
    ("divisor", "N = HW // 4 instead of HW // 8", M + "config.py",
     "points_divisor: int = 8", "points_divisor: int = 4"),
    ("coverage", "uniform coverage points added (PointRend's), not in the code", M + "refine.py",
     "return torch.gather(pts, 1, idx.unsqueeze(2).expand(n, kept, 2))",
     "return torch.cat([torch.gather(pts, 1, idx.unsqueeze(2).expand(n, kept, 2)), pts[:, :drawn - kept]], 1)"),
    ("level1_after_pool", "level 1 = layer1 (after the max-pool) instead of conv1", M + "network.py",
     "return c2, [self.seg.c0_conv(images), c1, c2, c3, c4]",
     "return c2, [self.seg.c0_conv(images), F.interpolate(l1, scale_factor=2.0)[:, :c1.shape[1]], c2, c3, c4]"),
    ("seg_mean_pixels", "seg term = mean over all pixels (large ROIs weigh more), not mean of ROI means",
     M + "losses.py",
     "per_roi.append(bce.flatten(1).mean(1))", "per_roi.append(bce.flatten())"),
]

#: run-time patches (id, departure, python code run before pytest)
RUNTIME = [
    ("mask_noflip", "augmentation flips the image but not the masks",
     "import copy, objguided.data.augment as A\n"
     "_real = A.augment\n"
     "def _aug(image, instances, size, rng, scales=A.SCALES, flip=True):\n"
     "    keep = copy.deepcopy(rng)\n"
     "    out, masks = _real(image, instances, size, rng, scales, flip)\n"
     "    _, unflipped = _real(image, instances, size, keep, scales, False)\n"
     "    return out, unflipped\n"
     "A.augment = _aug\n"),
]

FAST = ["tests/test_paper_architecture.py", "tests/test_paper_losses.py", "tests/test_paper_roi.py",
        "tests/test_paper_augment.py", "tests/test_paper_targets.py",
        "tests/test_paper_postprocess.py"]
GOLDEN = ["tests/test_paper_golden.py"]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_tests(root: Path, files: list[str], prelude: str = "") -> tuple[list[str], str]:
    code = (f"import objguided\nassert objguided.__file__.startswith({str(root)!r}), objguided.__file__\n"
            + prelude + "\nimport sys, pytest\n"
            f"sys.exit(pytest.main({files + ['-q', '-p', 'no:xdist', '-p', 'no:cacheprovider', '-rfE']!r}))\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=1800)
    out = proc.stdout + proc.stderr
    failed = sorted(set(re.findall(r"^(?:FAILED|ERROR) (\S+?)(?: - |$)", out, flags=re.M)))
    if proc.returncode not in (0, 1) and not failed:
        failed = [f"pytest exit {proc.returncode}"]
    return failed, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--no-golden", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    files = FAST + ([] if args.no_golden else GOLDEN)
    root = Path(tempfile.mkdtemp(prefix="paper_mutations_tree_"))
    for name in ("objguided", "methods", "tests"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(REPO / "pyproject.toml", root / "pyproject.toml")
    base_failed, out = run_tests(root, files)
    if base_failed:
        print(out[-3000:])
        sys.exit(f"the unmutated tree fails: {base_failed}")
    rows = []
    backup_dir = Path(tempfile.mkdtemp(prefix="paper_mutations_"))
    for mid, what, rel, old, new in SOURCE:
        if args.only and mid not in args.only:
            continue
        path = root / rel
        backup = backup_dir / path.name
        shutil.copy2(path, backup)
        before = sha(path)
        text = path.read_text()
        if text.count(old) != 1:
            rows.append((mid, what, rel, ["NOT APPLIED: pattern matches %d times" % text.count(old)], 0.0))
            continue
        started = time.time()
        try:
            path.write_text(text.replace(old, new))
            failed, _ = run_tests(root, files)
        finally:
            shutil.copy2(backup, path)
        assert sha(path) == before, f"{rel} not restored"
        rows.append((mid, what, rel, failed, time.time() - started))
        print(f"{mid:22s} {len(failed):3d} failing  {time.time() - started:5.0f} s", flush=True)
    for mid, what, prelude in RUNTIME:
        if args.only and mid not in args.only:
            continue
        started = time.time()
        failed, _ = run_tests(root, files, prelude)
        rows.append((mid, what, "(run-time patch of objguided/data/augment.py)", failed, time.time() - started))
        print(f"{mid:22s} {len(failed):3d} failing  {time.time() - started:5.0f} s", flush=True)
    shutil.rmtree(root)
    lines = ["| id | departure | file | failing tests |", "| --- | --- | --- | --- |"]
    for mid, what, rel, failed, _ in rows:
        names = "<br>".join(f"`{f.split('::')[0].replace('tests/', '')}::{f.split('::')[-1]}`" for f in failed) \
            if failed else "**none: survives**"
        lines.append(f"| {mid} | {what} | `{rel}` | {names} |")
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        Path(args.out).write_text(table)


if __name__ == "__main__":
    main()
