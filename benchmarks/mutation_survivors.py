"""Sort mutmut's surviving mutants into "equivalent" classes (with the reason) and "open" ones.

    (cd WORKDIR && mutmut results) > survivors.txt
    (cd WORKDIR && for n in $(sed 's/:.*//' survivors.txt); do echo "=== $n"; mutmut show $n | grep -E '^[-+][^-+]'; done) > diffs.txt
    .venv/bin/python benchmarks/mutation_survivors.py diffs.txt > table.md

A class applies only when *every* changed line of the mutant matches it. The rules are conservative
text rules; what none of them covers is listed as "open", to be killed by a test or explained by hand
(``MANUAL`` below, one reason per mutant).
"""  # noqa: E501 (the shell command above is quoted whole)

from __future__ import annotations

import re
import sys
from collections import defaultdict

#: (class, reason, predicate(old_line, new_line) -> bool)
RULES = [
    ("device", "device placement only (`.to(None)`, `device=None`, `dev = None`): a no-op when every tensor "
     "is on one device; the tests run on the CPU",
     lambda o, n: bool(re.search(r"\.to\(None\)|device=None|dev = None|\bdevice=[^,)]*[,)]", n + o))
     and _strip(o, r"\.to\([^()]*\)|,? ?device=[^,)]*|dev = [^\n]*")
     == _strip(n, r"\.to\([^()]*\)|,? ?device=[^,)]*|dev = [^\n]*")),
    ("dtype", "dtype argument dropped or None where the value already has that dtype, or float64 instead of "
     "float32 for integer-valued data: same values",
     lambda o, n:
     _strip(o, r"np\.(float32|float64|int64|uint8)|torch\.(float32|long)|dtype=[^,)]*|\bNone\b|\bbool\b|f32")
     == _strip(n, r"np\.(float32|float64|int64|uint8)|torch\.(float32|long)|dtype=[^,)]*|\bNone\b|\bbool\b|f32")),
    ("message", "the text of an error or log message only (no test asserts the wording of these)",
     lambda o, n: ("raise " in o or "log." in o or "warning(" in o or o.strip().startswith(("f\"", "\"", "name,")))
     and _strip(o, r"\"[^\"]*\"|f\"[^\"]*\"|\bNone\b|\w+\(exc\)|type\(\w+\)\.__name__|\[:\d\]|\bname\b|\bpretrained\b")
     == _strip(n, r"\"[^\"]*\"|f\"[^\"]*\"|\bNone\b|\w+\(exc\)|type\(\w+\)\.__name__|\[:\d\]|\bname\b|\bpretrained\b")),
    ("inplace", "`nn.ReLU(inplace=...)`: in-place or not, the same numbers",
     lambda o, n: _strip(o, r"inplace=\w+") == _strip(n, r"inplace=\w+")),
    ("reshape", "`reshape(-2, ...)` for `reshape(-1, ...)`: numpy takes any negative size as 'infer'",
     lambda o, n: o != n and o.replace("reshape(-1", "reshape(-2") == n),
    ("default_kw", "a keyword argument dropped or set to a value that equals the callee's default "
     "(grid_sample's mode 'bilinear' / padding 'zeros', interpolate's align_corners False, min_overlap 0.7)",
     lambda o, n: _strip(o, r",? ?(mode=\"bilinear\"|padding_mode=\"zeros\"|align_corners=(False|None)|0\.7)")
     == _strip(n, r",? ?(mode=\"bilinear\"|padding_mode=\"zeros\"|align_corners=(False|None)|0\.7)")),
]


def _strip(s: str, pat: str) -> str:
    return re.sub(r"\s+", "", re.sub(pat, "", s))


#: reasons for the survivors no rule covers, written after reading each diff: (function, mutant numbers, reason)
_MANUAL_GROUPS = [
    ("backbone.x__load_state", [14, 17], "map_location dropped: the checkpoints are CPU tensors, loaded on the CPU"),
    ("backbone.x__load_state", [15, 18, 21], "weights_only default/None/False: the same tensors for a plain state "
     "dict (the flag only refuses arbitrary pickles; torch >= 2.6 defaults to True)"),
    ("backbone.x_resnet_features", [21, 22], "fc.* not filtered: torchvision's net has an fc, so the keys load "
     "there and are never used (ResNetFeatures drops fc)"),
    ("backbone.x_resnet_features", [25], "strict=None is falsy like strict=False"),
    ("backbone.x_resnet_features", [47, 48, 56, 57, 58, 59, 61], "arguments of the warning's text only"),
    ("layers.x_head_at", [1, 113], "chunk size: the same hidden rows, computed in other slices (performance only)"),
    ("layers.x_head_at", [6, 7], "kernel_size[0] vs [1]: every head kernel is square"),
    ("layers.x_head_at", [31, 82, 100, 76],
     "device argument dropped: CPU tensors (as the sparse path only runs on a CPU)"),
    ("layers.x_head_at", [64, 65], "the fill for outside positions: clamped and then masked to the zero row anyway"),
    ("layers.x_head_at", [75], "slot dtype from the integer fill value: int64 either way"),
    ("layers.x_head_at", [107], "an extra zero row: the padding index still points at a zero row"),
    ("layers.xǁCombinationModuleǁforward", [9], "align_corners default (None) behaves as False"),
    ("layers.xǁSegmentationBranchǁ__init__", [22, 35, 36, 71, 96, 107], "ch[0] vs ch[1]: levels 0 and 1 are both 64 "
     "wide for every supported backbone (c0_conv is 64 by design, conv1 is 64 in ResNet-18/34/50)"),
    ("config.xǁModelConfigǁ__post_init__", [13], "k = 0 is still refused: 0 < beta <= 0 cannot hold"),
    ("losses.x_focal_loss", [19], "positives also counted as negatives: their weight (1 - gt)^4 is 0"),
    ("network.xǁObjGuidedNetǁ__init__", [15, 24, 33], "CombinationModule's default norm is 'batch', the decoder's"),
    ("network.xǁObjGuidedNetǁ_head_at", [4], "kernel_size[1]: square kernels"),
    ("network.xǁObjGuidedNetǁ_head_at", [7, 10], "the sparse/dense switch (< vs <=, square maps): both paths give the "
     "same numbers (test_sparse_heads_detect_as_the_dense_heads)"),
    ("network.xǁObjGuidedNetǁ_roi_groups", [6], "ROIs one by one instead of batched: the same numbers (tested), the "
     "refinement's random points drawn in another order"),
    ("network.xǁObjGuidedNetǁ_roi_groups", [10], "batched when batch_rois is False: the same numbers; only the golden "
     "test (batch_rois=False, the code's order of random points; not in the mutmut run) sees the point order"),
    ("refine.x_select_uncertain_points", [16], "kept == 0 with drawn > 0 goes on to topk(0): the same empty result"),
    ("refine.x_select_uncertain_points", [36, 49],
     "a CPU generator with CPU probabilities: both branches draw the same numbers"),
    ("refine.x_select_uncertain_points", [37, 51, 52, 54, 55, 57], "the branch for a generator on another device "
     "than the probabilities (CPU generator, CUDA training): not reachable on a CPU"),
    ("refine.x_select_uncertain_points", [68], "topk's default dim is the last, dim 1 of [n, drawn]"),
    ("roi.x__norm_grid", [49], "device argument dropped: CPU"),
    ("roi.x_crop_same_size", [20], "device argument dropped: CPU"),
    ("roi.x_crop_groups", [96], "device argument dropped: CPU"),
    ("roi.x_crop_groups", [161, 165, 167], "torch.cat of one part, or along the default dim 0: the same tensor"),
    ("roi.x_crop_groups", [76], "every ROI its own run: more slices, the same values"),
    ("roi.x_crop_groups", [171, 174, 175, 176, 177, 178, 179, 180, 181, 182],
     "the re-ordering branch: group_rois lists "
     "members image by image and crop_groups visits (level, image) in order, so positions are always ascending "
     "(the branch never runs; with the condition inverted it runs on the identity order)"),
    ("roi.x_crop_groups", [71], "reshape(-2, 2): numpy takes any negative size as 'infer'"),
    ("roi.x_cxcywh_to_inclusive", [11], "reshape(-2, 4): numpy takes any negative size as 'infer'"),
    ("roi.x_inclusive_to_cxcywh", [11], "reshape(-2, 4): numpy takes any negative size as 'infer'"),
    ("roi.x_group_rois", [14], "reshape(-2, 4): numpy takes any negative size as 'infer'"),
    ("targets.x_build_targets", [172], "reshape(-2, 4): numpy takes any negative size as 'infer'"),
    ("roi.x_group_rois", [1], "default batch=False: the network always passes cfg.batch_rois; same numbers either way"),
    ("roi.x_group_rois", [22], "min_size default 2.0 = the config's"),
    ("roi.x_roi_levels", [28, 29], "w or h exactly 2.0 at a level: impossible for integer GT boxes (1.1 w / 2^i = 2 "
     "has no integer w, and float32 rounding is far from bridging it); measure zero for predicted boxes"),
    ("roi.x_roi_levels", [4], "reshape(None) of a 4-vector: unchanged (every caller passes one box)"),
    ("roi.x_sample_separable", [43, 50], "no lower clamp: a negative index reads a wrapped row whose weight is 0 "
     "(masks hold no inf/NaN)"),
    ("targets.x_build_targets", [49, 51, 52], "astype copy flag: the same values"),
    ("targets.x_build_targets", [128], "gaussian_radius's default min_overlap is 0.7, the value passed"),
    ("targets.x_draw_gaussian", [43, 45, 48], "patch and region always have equal shapes; np.maximum on empty arrays "
     "is a no-op"),
    ("targets.x_draw_gaussian", [56], "float64 patch written into the float32 heatmap through out=: the same rounding"),
    ("targets.x_gaussian_kernel", [26, 27, 28, 29, 30], "the eps cut never fires: the smallest kernel value is "
     "exp(-36 r^2 / (2r+1)^2) >= e^-9, far above eps * max = 2.2e-16"),
    ("targets.x_largest_component", [25], "recomputing the crop of the only component gives the same crop"),
    ("postprocess.x__axis_weights", [27], "one more all-zero column in the touched window: the same canvas and masks"),
    ("postprocess.x__axis_weights", [28], "hi == lo gives an (n, 0) vote matrix on both branches"),
    ("postprocess.x__axis_weights", [30], "a ROI wholly outside the canvas: a window of zeros instead of an empty one; "
     "nothing reaches a threshold > 0 and splat's slice of it is zeros"),
    ("postprocess.x_splat_window", [12], "reshape(None) of the 4-vector roi_box: unchanged (callers pass one box)"),
    ("postprocess.x__tight", [20, 36], "the placeholder score: to_instances sets cand.score before any use"),
    ("postprocess.x__iou", [89, 91, 93], "union > 0 always: every candidate holds a pixel (its box is its tight box), "
     "so union >= 1"),
    ("postprocess.x_mask_nms", [40], "break when no candidate after this one is alive: the loop would only skip them"),
    ("postprocess.x_mask_nms", [43],
     "the box pre-filter widened: it only saves _iou calls, and _iou returns 0 for boxes "
     "that do not overlap on both axes (paper: ix2 < ix1 or iy2 < iy1; code: the authors' pre-check)"),
    ("postprocess.x_mask_nms", [77], "None stored in a bool array is False"),
    ("postprocess.x_to_instances", [9], "reshape(None) of the 1-D score vector: unchanged"),
    ("postprocess.x_to_instances", [73], "> vs >= 1 - 1e-9: a bilinear value of a 0/1 canvas equal to that float does "
     "not arise (the tolerance is there for values a rounding below 1)"),
    ("postprocess.x_to_instances", [84], "window_to_orig's default mode is 'nearest', the value passed"),
    ("postprocess.x_to_instances", [89], "a nearest resize of a 0/1 window holds only 0 and 1: > 0.5 and >= 0.5 agree"),
    ("preprocess.xǁFrameǁorig_range", [1, 8, 10, 17, 19], "a wider safety range: more original pixels visited, "
     "each 0 (resampled from outside the window); the same output"),
    ("preprocess.xǁFrameǁwindow_to_orig", [16, 17, 22, 23], "an empty range gives an empty result of another "
     "empty shape ((0, k), (1, 0), (0, 1)): no pixel either way"),
    ("preprocess.xǁFrameǁwindow_to_orig", [88, 95, 100, 107], "the upper clamp dropped or at S + 1: sample "
     "coordinates stay below S - 0.5, and one in (S - 1, S - 0.5) puts its two taps on S - 1 (i1 is clamped), "
     "weights summing to 1: the value of the clamped coordinate"),
    ("preprocess.xǁFrameǁwindow_to_orig", [121], "i1 = S only when the coordinate is clamped to S - 1 exactly: "
     "its weight f is 0"),
    ("preprocess.x_prepare", [134], "align_corners dropped: grid_sample's default is False, the value passed"),
    ("objguided.data.augment.x__warp_2d", [20, 28, 34],
     "prefilter only acts for spline orders > 1; the warps are order 0 or 1"),
    ("objguided.data.augment.x__warp_2d", [26, 27],
     "affine_transform's defaults: mode 'constant', cval 0.0, the values passed"),
    ("objguided.data.augment.x_augment", [37], "warp_crop's default order is 1, the value passed"),
    ("objguided.data.augment.x_augment", [55],
     "labels warped as float64 instead of int32 (order 0): the same ids, the same masks"),
    ("objguided.data.augment.x_augment", [79],
     "no instance: a (1, S, S) all-False placeholder, dropped by the next line's any() filter"),
    ("objguided.data.augment.x_augment", [89], "reshape(n, -2): numpy takes any negative size as 'infer'"),
    ("objguided.data.augment.x_border", [4],
     "b >= 0 instead of b > 0: at b = 0 the loop ends anyway (n - 0 > 0 for n >= 1)"),
    ("objguided.data.augment.x_crop_params", [18, 25, 26, 27, 28, 31, 38, 39, 40, 41],
     "the else branch (centre at n // 2) is "
     "unreachable: border(n) returns b with n - b > b for every n >= 1 (or b = 0)"),
    ("objguided.data.augment.x_crop_params", [44], "rng.random() equal to 0.5 exactly: probability 2^-53"),
    ("objguided.data.augment.x_warp_crop", [5, 7],
     "nearest warp on a float32 copy of a bool mask / int label map (< 2^24): the same "
     "values after the cast back"),
    ("objguided.data.augment.x_warp_crop", [9], "scipy's nearest warp of a bool array equals that of its uint8 copy"),
    ("objguided.data.augment.x_warp_crop", [61], "rounding and clipping the integer values of a nearest warp: a no-op"),
    ("objguided.data.augment.x_warp_crop", [67, 68],
     "bilinear values lie between the input's values and cval 0: the clip never acts"),
    ("objguided_methods.objguided.x_train_config", [18], "TrainConfig's default optimizer is 'adam', the value passed"),
    ("objguided_methods.objguided.xǁTrainSamplesǁencode", [21],
     "prepare's default mode is 'stretch', the value passed"),
    ("objguided_methods.objguided.xǁObjGuidedǁpredict", [3, 9],
     "device None: .to(None) keeps the CPU tensors where they are"),
    ("objguided.data.augment.x_crop_params", [10, 12],
     "the scales' dtype left to numpy: the same numbers, float() of the choice"),
    ("objguided.data.augment.x_warp_crop", [51, 53],
     "> 0.5 instead of > 0 on a nearest warp of a 0/1 mask: the values are 0 or 1"),
    ("targets.x_gaussian_radius", list(range(1, 80)), "exhaustively equivalent on the radius' domain: every (ceil h, "
     "ceil w) in 1..128 gives the same int radius, and the exact value matches at 4 sizes "
     "(test_gaussian_radius_equals_centernets_over_every_box_of_a_512_input); these mutants only change r1 or r2, "
     "which are never the smallest root there"),
]


def _full(fn: str) -> str:
    """Functions of objguided/models are named without the package; others by their full module path."""
    return fn if fn.startswith(("objguided.", "objguided_methods.")) else f"objguided.models.{fn}"


MANUAL: dict[str, str] = {f"{_full(fn)}__mutmut_{i}": why for fn, ids, why in _MANUAL_GROUPS for i in ids}


def parse(path):
    muts, cur = {}, None
    for line in open(path, encoding="utf-8"):
        line = line.rstrip("\n")
        if line.startswith("=== "):
            cur = line[4:].strip()
            muts[cur] = ([], [])
        elif cur and line.startswith("-"):
            muts[cur][0].append(line[1:])
        elif cur and line.startswith("+"):
            muts[cur][1].append(line[1:])
    return muts


def classify(old, new):
    if not old and not new:
        return None
    o, n = " ".join(old), " ".join(new)
    for name, _, pred in RULES:
        try:
            if pred(o, n):
                return name
        except re.error:
            continue
    return None


def main():
    muts = parse(sys.argv[1])
    by = defaultdict(list)
    for name, (old, new) in muts.items():
        cls = "manual" if name in MANUAL else classify(old, new)
        by[cls or "open"].append(name)
    reasons = {name: reason for name, reason, _ in RULES}
    print(f"{len(muts)} survivors\n")
    print("| class | mutants | why equivalent |\n| --- | --- | --- |")
    for cls in [r[0] for r in RULES] + ["manual", "open"]:
        if by.get(cls):
            fallback = "see the per-mutant list" if cls == "manual" else "not equivalent by any rule: see below"
            print(f"| {cls} | {len(by[cls])} | {reasons.get(cls, fallback)} |")
    for cls, names in sorted(by.items()):
        print(f"\n### {cls} ({len(names)})\n")
        for name in sorted(names):
            old, new = muts[name]
            extra = f" — {MANUAL[name]}" if name in MANUAL else ""
            print(f"- `{name.replace('objguided.models.', '')}`: `{' '.join(s.strip() for s in new)[:110]}`{extra}")


if __name__ == "__main__":
    main()
