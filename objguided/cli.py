"""The `objguided` command: one verb per step of the DAG.

Every Snakemake rule calls one of these verbs, so each step also runs (and is tested) without Snakemake.
Structured arguments (a dataset's or a run's slice of the config) travel as JSON strings.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from objguided.engine.guard import guard_process
from objguided.errors import ConfigError, ObjguidedError

log = logging.getLogger("objguided")


def _json_arg(text: str, option: str) -> dict:
    """The JSON object given to the command-line option ``option``; bad JSON is an error naming the option."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{option} is not valid JSON ({exc}): {text[:200]}") from exc
    if not isinstance(value, dict):
        raise ConfigError(f"{option} must be a JSON object, got {type(value).__name__}")
    return value


def cmd_fetch(args) -> None:
    from objguided.data.convert import fetch

    record = fetch(_json_arg(args.spec, "--spec"), args.raw)
    log.info("fetched %s into %s", ", ".join(f["name"] for f in record.get("files", [])) or "data", args.raw)


def cmd_convert(args) -> None:
    from objguided.data.convert import convert

    manifest = convert(_json_arg(args.spec, "--spec"), args.out, args.raw)
    log.info("converted %d images (%d objects) into %s", manifest["images"], manifest["objects"], args.out)


def cmd_split(args) -> None:
    from objguided.data.canonical import CanonicalDataset
    from objguided.data.split import seeded_split, split_from_files
    from objguided.engine.atomic import write_json

    spec = _json_arg(args.spec, "--spec")
    ids = CanonicalDataset(args.data).ids
    kind = spec.get("kind", "seeded")
    fractions, seed = spec.get("fractions", [0.6, 0.2, 0.2]), spec.get("seed", 0)
    if kind == "seeded":
        split = seeded_split(ids, fractions, seed)
    elif kind == "grouped":
        from objguided.data.split_groups import group_rule, grouped_split

        split = grouped_split(ids, group_rule(spec.get("group_by", "plant")), fractions, seed)
    elif kind == "files":
        split = split_from_files(spec["folder"], ids)
    else:
        raise ConfigError(f"split.kind: '{kind}' is not one of seeded, grouped, files")
    write_json(args.out, split)
    log.info("split %s: %s", args.data, {k: len(split[k]) for k in ("train", "val", "test")})


def cmd_train(args) -> None:
    from objguided.engine.run import train_run

    record = train_run(args.method, args.variant, _json_arg(args.params, "--params"), args.data, args.split, args.seed,
                       args.out, args.device)
    log.info("model written to %s (%.1f s)", args.out, record["train_seconds"])


def cmd_predict(args) -> None:
    from objguided.engine.run import predict_run

    n = predict_run(args.model, args.data, args.split, args.subset, args.out, args.device, args.speed_out)
    log.info("%d instances written to %s", n, args.out)
    if args.speed_out:
        log.info("speed of the same pass (batch 1, first image dropped) written to %s", args.speed_out)


def cmd_score(args) -> None:
    from objguided.engine.atomic import check_writable, write_json
    from objguided.engine.provenance import provenance
    from objguided.metrics.score import score_predictions

    check_writable(args.out)  # before the scoring pass, not after it
    metrics = score_predictions(args.gt, args.pred, split_path=args.split, subset=args.subset,
                                box_convention=args.box_convention, mask_iou=args.mask_iou,
                                extras=not args.no_extras)
    metrics["provenance"] = provenance({"gt": str(args.gt), "pred": str(args.pred), "subset": args.subset,
                                        "box_convention": args.box_convention, "mask_iou": args.mask_iou})
    write_json(args.out, metrics)
    log.info("APseg %.4f  APdec %.4f  -> %s", metrics["ap_seg_mean"], metrics["ap_dec_mean"], args.out)


def cmd_export_coco(args) -> None:
    from objguided.data.canonical import read_label_map
    from objguided.data.coco_interop import integer_image_ids, renumber_predictions
    from objguided.engine.atomic import write_json
    from objguided.metrics.coco import gt_coco_dict, gt_sources

    # integer image ids (faster-coco-eval and the COCO format require them); the stem stays in file_name
    items = ((i, read_label_map(p)) for i, p in gt_sources(args.data, args.split, args.subset))
    coco, number = integer_image_ids(gt_coco_dict(items))
    results = renumber_predictions(args.pred, number) if args.pred else None
    write_json(args.out, coco)
    log.info("%d images, %d objects written to %s", len(coco["images"]), len(coco["annotations"]), args.out)
    if results is not None:
        pred_out = args.pred_out or args.out.with_name(f"{args.out.stem}_results.json")
        write_json(pred_out, results)
        log.info("%d predictions of %s, with the same image ids, written to %s", len(results), args.pred, pred_out)


def cmd_time(args) -> None:
    from objguided.engine.run import time_run

    result = time_run(args.model, args.data, args.split, args.subset, args.out, args.device, args.max_images)
    log.info("%.2f FPS on %s over %d images -> %s", result["fps"], result["device"], result["n_images"], args.out)


def _report_spec(text: str) -> dict:
    """``--runs``: a .json file or the JSON itself; an unreadable file or bad JSON is one clear error."""
    if not text.endswith(".json"):
        return _json_arg(text, "--runs")
    path = Path(text)
    try:
        spec = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"--runs {path}: cannot read the report spec ({exc.strerror or exc})") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--runs {path}: the report spec is not valid JSON ({exc})") from exc
    if not isinstance(spec, dict):
        raise ConfigError(f"--runs {path}: the report spec must be a JSON object, got {type(spec).__name__}")
    return spec


def cmd_report(args) -> None:
    from objguided.engine.atomic import check_writable
    from objguided.report.build import build_report

    spec = _report_spec(args.runs)
    check_writable(args.out / "report.html")  # before reading every run
    written = build_report(spec, args.out)
    log.info("report written: %s", ", ".join(str(p) for p in written))


def cmd_methods(args) -> None:
    import dataclasses

    import objguided_methods as methods

    for name in methods.available():
        method = methods.get(name)
        # list-valued settings (tuning grids, crop_scales, lr_milestones) are default_factory fields
        fields = ", ".join(f"{f.name}={f.default_factory() if f.default is dataclasses.MISSING else f.default!r}"
                           for f in dataclasses.fields(method.Config)
                           if (f.default, f.default_factory) != (dataclasses.MISSING, dataclasses.MISSING))
        print(f"{name}{' (gpu)' if method.uses_gpu else ''}: {fields}")


def _add_data_args(p: argparse.ArgumentParser, subset_default: str = "test") -> None:
    p.add_argument("--data", required=True, help="canonical dataset folder (images/, labels/)")
    p.add_argument("--split", help="split.json (default: <data>/split.json)")
    p.add_argument("--subset", default=subset_default, choices=["train", "val", "test"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="objguided", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    verbs = parser.add_subparsers(dest="verb", required=True)

    p = verbs.add_parser("fetch", help="download (or locate) a dataset's raw data and verify it")
    p.add_argument("--spec", required=True, help="the dataset's config (JSON)")
    p.add_argument("--raw", required=True, type=Path, help="folder for the raw data")
    p.set_defaults(func=cmd_fetch)

    p = verbs.add_parser("convert", help="make a canonical dataset folder from a source")
    p.add_argument("--spec", required=True, help="the dataset's config (JSON)")
    p.add_argument("--raw", type=Path, help="the fetched raw data, for sources that fetch")
    p.add_argument("--out", required=True, type=Path)
    p.set_defaults(func=cmd_convert)

    p = verbs.add_parser("split", help="write split.json for a converted dataset")
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--spec", default="{}", help='{"kind": "seeded", "fractions": [...], "seed": k} or '
                                                '{"kind": "files", "folder": ...}')
    p.add_argument("--out", required=True, type=Path)
    p.set_defaults(func=cmd_split)

    p = verbs.add_parser("train", help="train one method variant with one seed")
    p.add_argument("--method", required=True)
    p.add_argument("--variant", default="default")
    p.add_argument("--params", default="{}", help="the variant's hyper-parameter overrides (JSON)")
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--split", required=True, type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True, type=Path, help="model file to write (model.pt)")
    p.set_defaults(func=cmd_train)

    p = verbs.add_parser("predict", help="predict a subset; write COCO results JSON")
    p.add_argument("--model", required=True, type=Path)
    _add_data_args(p)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--speed-out", type=Path, help="also time this pass as `time` does and write the FPS record here")
    p.set_defaults(func=cmd_predict)

    p = verbs.add_parser("score", help="score predictions with the paper's AP protocol")
    p.add_argument("--gt", required=True, type=Path, help="canonical dataset folder, or a folder of label maps")
    p.add_argument("--pred", required=True, type=Path, help="COCO results JSON")
    p.add_argument("--split", type=Path, help="score only one subset of this split.json")
    p.add_argument("--subset", choices=["train", "val", "test"])
    p.add_argument("--box-convention", default="inclusive", choices=["inclusive", "pixel_extent"])
    p.add_argument("--mask-iou", default="binary", choices=["binary", "soft_area"])
    p.add_argument("--no-extras", action="store_true",
                   help="skip the extra columns (COCO AP, the DSB2018 score, the CTC and CVPPP measures)")
    p.add_argument("--out", required=True, type=Path)
    p.set_defaults(func=cmd_score)

    p = verbs.add_parser("export-coco", help="write ground truth as a COCO instances JSON")
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--split", type=Path)
    p.add_argument("--subset", choices=["train", "val", "test"])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--pred", type=Path, help="a run's predictions.json, rewritten with the export's image ids")
    p.add_argument("--pred-out", type=Path,
                   help="where the rewritten predictions go (default: <out stem>_results.json)")
    p.set_defaults(func=cmd_export_coco)

    p = verbs.add_parser("time", help="inference speed (FPS) as the paper measures it")
    p.add_argument("--model", required=True, type=Path)
    _add_data_args(p)
    p.add_argument("--device", default="auto")
    p.add_argument("--max-images", type=int, default=None)
    p.add_argument("--out", required=True, type=Path)
    p.set_defaults(func=cmd_time)

    p = verbs.add_parser("report", help="Tables I and II, Figures 4 and 5 and report.html from finished runs")
    p.add_argument("--runs", required=True, help="the report spec: JSON, or a .json file")
    p.add_argument("--out", required=True, type=Path, help="report folder")
    p.set_defaults(func=cmd_report)

    p = verbs.add_parser("methods", help="list the registered methods and their defaults")
    p.set_defaults(func=cmd_methods)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        guard_process()
        args.func(args)
    except ObjguidedError as exc:
        print(f"objguided {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a write outside objguided.engine.atomic: a full or read-only disk is still one line
        from objguided.engine.atomic import WRITE_ERRNOS, output_error

        err = output_error(exc.filename or "output", exc, errnos=WRITE_ERRNOS)
        if err is None:
            raise
        print(f"objguided {args.verb}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
