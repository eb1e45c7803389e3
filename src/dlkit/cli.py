"""The `dlkit` command line (also `python -m dlkit`).

Errors print one line on stderr and exit with code 2; `--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

from .engine.preemption import Preempted
from .errors import ConfigError, DlkitError, unknown


def _parse_sets(items: list[str]) -> dict[str, str]:
    """`--set k=v ...` as {k: v} (values still text; the recipe's options parse and check them); a key given
    twice takes its last value, as a later flag overrides an earlier one."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects key=value items (e.g. --set lr=0.01 epochs=3); got {item[:80]!r}. Put "
                              "the recipe name before --set.")
        out[key] = value
    return out


def _verified(name: str) -> str:
    from .recipes.verify import records_dir

    path = records_dir() / f"{name}.json"
    if not path.is_file():
        return "not verified"
    rec = json.loads(path.read_text())
    return f"{'passed' if rec['passed'] else 'FAILED'} ({rec['value']:.4g}, {rec['date'][:10]})"


def cmd_list(args) -> int:
    from .recipes import get_recipe, list_recipes
    from .registry import MODELS

    pattern = args.pattern or "*"
    pattern = pattern if any(c in pattern for c in "*?[") else f"*{pattern}*"
    if args.what == "models":
        if args.task is not None:
            from .tasks import TASKS

            TASKS.get(args.task)  # an unknown task: one line with the nearest names
        entries = MODELS.entries(pattern, task=args.task, pretrained=True if args.pretrained else None)
        if not entries:
            print(f"no model matches '{args.pattern or '*'}'" + (f" with task {args.task!r}" if args.task else "")
                  + (" with pretrained weights" if args.pretrained else ""))
            return 0
        rows = [("model", "task", "family", "parameters", "input", "pretrained", "notes")]
        for e in entries:
            m = e.meta
            size = "x".join(map(str, m["input_size"])) if m["input_size"] else "-"
            rows.append((e.name, m["task"], m["family"], f"{m['num_params']:,}" if m["num_params"] else "-", size,
                         ",".join(m["pretrained"]) or "-", m["section"] or "-"))
        _print_table(rows)
        if any(not e.meta["num_params"] for e in entries):
            print("parameters: the published or hand-derived count, which the tests check the built model "
                  "against; '-' where there is none (`dlkit summary NAME` counts them)")
        return 0
    if args.pretrained:
        raise ConfigError(f"--pretrained filters models; `dlkit list {args.what}` has no pretrained weights. Use "
                          f"`dlkit list models --pretrained`")
    if args.what == "tasks":
        from .tasks import TASKS

        if args.task is not None:
            raise ConfigError("--task filters models and recipes; `dlkit list tasks` takes a pattern (e.g. 'seq*')")
        rows = [("task", "class", "notes")]
        rows += [(e.name, e.meta["cls_name"], e.meta["section"] or "-") for e in TASKS.entries(pattern)]
        _print_table(rows)
        return 0
    families = {get_recipe(n).task for n in list_recipes()}
    if args.task is not None and args.task not in families:
        raise unknown("recipe task", args.task, families, "dlkit list recipes")
    names = list_recipes(pattern, task=args.task)
    if not names:
        print(f"no recipe matches '{args.pattern or '*'}'" + (f" with task {args.task!r}" if args.task else ""))
        return 0
    rows = [("recipe", "task", "notes", "expected result", "budget", "verified")]
    for n in names:
        r = get_recipe(n)
        rows.append((n, r.task, r.notes, r.expected, f"{r.budget_s:g} s", _verified(n)))
    _print_table(rows)
    return 0


def _print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


def cmd_show(args) -> int:
    from .recipes import get_recipe

    r = get_recipe(args.recipe)
    print(f"{r.name}: {r.description}\nnotes: {r.notes}\nexpected: {r.expected} within {r.budget_s:g} s on a 2-core "
          f"CPU ({_verified(r.name)})\ndata: {', '.join(r.datasets) or 'generated or embedded, no download'}\n"
          f"training: {'a study of several trainings, each through the Trainer' if r.study else 'the Trainer'}")
    options, types, smoked = r.options(), r.option_types(), r.smoke_options()
    own = [k for k in options if k in r.defaults]
    for title, keys in (("options of the recipe", own), ("Trainer and global options", [k for k in options
                                                                                         if k not in own])):
        print(f"{title} (--set KEY=VALUE):")
        width = max(map(len, keys), default=0)
        twidth = max((len(types[k]) for k in keys), default=0)
        for k in sorted(keys):
            smoke = f"  (--smoke: {smoked[k]!r})" if k in smoked and smoked[k] != options[k] else ""
            print(f"  {k.ljust(width)}  {types[k].ljust(twidth)}  {options[k]!r}{smoke}")
    return 0


# options that change how a run is shown or where it runs, not what it learns
_PRESENTATION = {"device", "threads", "progress", "log_every", "tensorboard"}


def _expectation_scope(recipe: str, summary: dict) -> str:
    """What the recipe's expected result was measured on, when the run differs from it: a smoke run, or options
    whose values (in the run's config.json, over all its resumes) differ from the recipe's defaults."""
    if summary.get("smoke"):
        return " of the full run; this was a smoke run"
    from .recipes import get_recipe

    defaults = get_recipe(recipe).options()
    try:
        config = json.loads((Path(summary["run_dir"]) / "config.json").read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    changed = sorted(k for k, v in config.items() if k in defaults and v != defaults[k] and k not in _PRESENTATION)
    return f" of the recipe's defaults; this run set {', '.join(changed)}" if changed else ""


def cmd_run(args) -> int:
    from .recipes import run_recipe
    from .recipes.options import INT_MAX, SEED_MAX

    for flag, value, low, high in (("--epochs", args.epochs, 1, INT_MAX), ("--seed", args.seed, 0, SEED_MAX)):
        if value is not None and not low <= value <= high:
            raise ConfigError(f"{flag} expects a whole number from {low} to {high}; got {value}")
    if args.overwrite and args.out is None and args.resume is None:  # with --resume: the runner says which
        raise ConfigError("--overwrite replaces the run in the folder --out names; without --out every run gets a new "
                          "folder under runs/, so pass --out DIR with it")
    sets = _parse_sets(args.set)
    for key in ("epochs", "seed", "device", "data_dir"):
        if key in sets and getattr(args, key) is not None:
            raise ConfigError(f"{key} is given twice, as --{key.replace('_', '-')} and as --set {key}; keep one")
    summary = run_recipe(args.recipe, overrides=sets, epochs=args.epochs, device=args.device,
                         seed=args.seed, out=args.out, resume=args.resume, smoke=args.smoke, data_dir=args.data_dir,
                         overwrite=args.overwrite)
    if summary:
        mark = "reached" if summary["passed"] else "did NOT reach"
        op = ">=" if summary["higher_is_better"] else "<="
        print(f"{summary['recipe']}: {summary['metric']} = {summary['value']:.4f} ({mark} the expected {op} "
              f"{summary['threshold']:g}{_expectation_scope(args.recipe, summary)}) in {summary['seconds']:.1f} s of "
              "training")
        run_dir = Path(summary["run_dir"])
        usable = ""
        if (run_dir / "model.json").is_file():
            from .runs import TASKS as PREDICTS

            tools = ("dlkit predict / dlkit export / " if summary.get("task") in PREDICTS else "") + "dlkit.load_run"
            usable = f" ({tools} {'use' if '/' in tools else 'uses'} it)"
        written = [n for n in ("report.html", "figures/", "metrics.csv", "checkpoints/", "model.safetensors")
                   if (run_dir / n.rstrip("/")).exists()]  # a study writes no checkpoint, no model
        print(f"run folder: {run_dir}: {', '.join(written)}{usable}")
    return 0


def cmd_verify(args) -> int:
    from .recipes import list_recipes, verify_recipe

    if args.all == bool(args.recipe):
        raise ConfigError("dlkit verify expects one recipe name or --all")
    names = list_recipes() if args.all else [args.recipe]
    failed = []
    for i, name in enumerate(names, 1):
        if len(names) > 1:
            print(f"[{i}/{len(names)}] {name} ...", flush=True)
        rec = verify_recipe(name, results_dir=args.results, device=args.device, data_dir=args.data_dir)
        status = "PASS" if rec["passed"] else "FAIL"
        budget = f" (OVER its budget of {rec['budget_s']:g} s)" if rec.get("over_budget") else ""
        print(f"{status} {name}: {rec['metric']} = {rec['value']:.4f} (threshold {rec['threshold']:g}) "
              f"in {rec['seconds']:.1f} s{budget}", flush=True)
        if not rec["passed"]:
            failed.append(name)
    if failed:
        print(f"{len(failed)} of {len(names)} recipes did not reach their expected result: {', '.join(failed)}",
              file=sys.stderr)
        return 1
    return 0


def cmd_predict(args) -> int:
    from .runs import load_run
    from .techniques.predict import check_task, classify_files, describe_mask, segment_files

    if args.top < 1:
        raise ConfigError(f"--top expects a number of classes >= 1; got {args.top}")
    for f in args.files:
        try:
            Path(f).is_file()
        except OSError as e:  # e.g. a name too long
            raise ConfigError(f"cannot open the image file {f[:200]} ({e.strerror or e})") from None
    run = load_run(args.run_dir, device=args.device or "cpu")
    if check_task(run) == "classification":
        for path, top in zip(args.files, classify_files(run, args.files, top=args.top)):
            print(path)
            for name, p in top:
                print(f"  {p:7.2%}  {name}")
        return 0
    out = Path(args.out or ".")
    try:
        if out.exists() and not out.is_dir():
            raise ConfigError(f"--out expects a folder for the mask PNGs; {out} is a file")
        masks = segment_files(run, args.files, out, overwrite=args.overwrite)
    except DlkitError:  # a damaged image file (DataError is an OSError too)
        raise
    except OSError as e:
        raise ConfigError(f"cannot write the masks into {out} ({e.strerror or e}); pass a writable --out folder"
                          ) from None
    for path, (mask_path, mask) in zip(args.files, masks):
        print(f"{path}: mask {mask_path} ({mask.shape[0]}x{mask.shape[1]}, pixel value = class id; "
              f"{describe_mask(mask, run.class_names)})")
    return 0


def cmd_export(args) -> int:
    from .runs import load_run
    from .techniques.export import export_run

    run = load_run(args.run_dir)
    try:
        check = export_run(run, args.format, out=args.out, overwrite=args.overwrite)
    except DlkitError:
        raise
    except OSError as e:
        raise ConfigError(f"cannot write the exported model to {args.out or args.run_dir} ({e.strerror or e}); pass a "
                          "writable --out path") from None
    print(check.describe())
    return 0 if check.passed else 1


def cmd_summary(args) -> int:
    from . import create_model
    from .registry import model_entrypoint
    from .report.summary import check_input_shape, default_input_shape, summarize

    if (args.model is None) == (args.compare is None):
        raise ConfigError("dlkit summary takes one MODEL, or --compare NAME,NAME,... (a cost table of detectors)")
    if args.compare is not None:
        return _compare_costs(args)
    if args.num_classes is not None or args.proposals != 2000:
        raise ConfigError("--num-classes and --proposals apply to a --compare cost table; a single MODEL's summary "
                          "is of its default build (change its input with --input-shape)")
    shape = None
    if args.input_shape:  # checked before the model is built
        try:
            shape = tuple(int(s) for s in args.input_shape.replace("x", ",").split(",") if s.strip())
        except ValueError:
            raise ConfigError(f"--input-shape expects whole numbers like 3,224,224; got {args.input_shape[:80]!r}"
                              ) from None
        check_input_shape(shape)
    model_entrypoint(args.model)  # an unknown name is refused before anything is built
    model = create_model(args.model)
    shape = shape or default_input_shape(model)  # token models: a sequence length
    if shape is None:
        raise ConfigError(f"model '{args.model}' has no default input shape; pass one, e.g. --input-shape 3,224,224")
    print(summarize(model, input_shape=(1, *shape)).format_table())
    return 0


def _compare_costs(args) -> int:
    """`dlkit summary --compare`: the notes' Table 4.1, conv and FF FLOPs per image of detectors (and classifiers)
    for --proposals regions; a Fast R-CNN also gets the row of Faster R-CNN on its feature map."""
    from . import create_model
    from .models.detection.fast_rcnn import FastRCNN
    from .registry import model_entrypoint
    from .report.detection_cost import detection_cost, faster_rcnn_cost, format_cost_table
    from .report.summary import check_input_shape

    names = [n.strip() for n in args.compare.split(",") if n.strip()]
    if not names or args.proposals < 0:
        raise ConfigError(f"--compare needs model names (e.g. rcnn_alexnet,fast_rcnn_alexnet) and --proposals >= 0; "
                          f"got {args.compare!r}, {args.proposals}")
    shape = None
    if args.input_shape:
        try:
            shape = tuple(int(s) for s in args.input_shape.replace("x", ",").split(",") if s.strip())
        except ValueError:
            raise ConfigError(f"--input-shape expects whole numbers like 3,600,600; got {args.input_shape[:80]!r}"
                              ) from None
        check_input_shape(shape)
    for name in names:
        model_entrypoint(name)  # unknown names are refused before anything is built
    costs = []
    for name in names:
        model = create_model(name, **({"num_classes": args.num_classes} if args.num_classes else {}))
        size = shape or tuple(model.default_input_shape)
        try:
            costs.append(detection_cost(model, size, name))
            if isinstance(model, FastRCNN):  # Faster R-CNN is Fast R-CNN plus an RPN on the same map
                costs.append(faster_rcnn_cost(model, size, f"Faster R-CNN ({name} + RPN)"))
        except (RuntimeError, ValueError, IndexError, TypeError) as e:
            if isinstance(e, DlkitError):
                raise
            raise ConfigError(f"{name} cannot take an image of shape {'x'.join(map(str, size))} "
                              f"({type(e).__name__}: {' '.join(str(e).split())[:200]}); give --input-shape C,H,W "
                              f"it accepts, e.g. {'x'.join(map(str, model.default_input_shape))}") from e
    print(format_cost_table(costs, args.proposals))
    return 0


def cmd_status(args) -> int:
    from .recipes.verify import records_dir
    from .report.status import write_status

    results = Path(args.results) if args.results is not None else records_dir()  # else the checkout's records
    if not os.path.isdir(results):  # False also for a name the file system cannot hold
        raise ConfigError(f"--results {results}: no such folder of verify records; write them with `dlkit verify` "
                          "(its --results) or pass the folder that holds them")
    path = write_status(Path(args.out), results)
    print(f"wrote {path}")
    return 0


def cmd_report(args) -> int:
    from .report.html import build_report, check_run_folder, read_json_object

    run_dir = check_run_folder(Path(args.run_dir))  # a one-line error for anything but a dlkit run folder
    if not (run_dir / "metrics.csv").is_file() and not (run_dir / "summary.json").is_file():
        raise ConfigError(f"{run_dir} holds no results to report (no metrics.csv, no summary.json): its run stopped "
                          "before its first logged step. Run the recipe again with --out there (the folder is reused)")
    for name in ("summary.json", "config.json"):  # refuse damaged files before anything is written
        read_json_object(run_dir / name)
    figs = run_dir / "figures"
    if (run_dir / "metrics.csv").is_file():
        from .report.figures import plot_curves, read_metrics

        read_metrics(run_dir / "metrics.csv")
        if figs.exists() and not figs.is_dir():
            raise ConfigError(f"{figs} is a file, where the report keeps its figures; move it away and run again")
        try:
            figs.mkdir(exist_ok=True)
            plot_curves(run_dir / "metrics.csv", figs)
        except DlkitError:
            raise
        except OSError as e:
            raise ConfigError(f"cannot write the curves into {figs} ({e.strerror or e}); make the run folder "
                              "writable") from None
    print(f"wrote {build_report(run_dir)}")
    return 0


def cmd_coco_eval(args) -> int:
    from .metrics.detection import evaluate_coco_files

    result = evaluate_coco_files(args.gt, args.detections, args.iou_type)
    print("\n".join(result.summary_lines()))
    if args.json:
        out = Path(args.json)
        try:
            out.write_text(json.dumps({"iou_type": args.iou_type, **result.as_dict()}, indent=2) + "\n")
        except OSError as e:
            raise ConfigError(f"cannot write {out} ({e.strerror or e}); pass a writable --json path") from None
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors on one line like every other error: `dlkit: error: ...` and exit 2."""

    def error(self, message: str):
        msg = " ".join(message.split())
        self.exit(2, f"dlkit: error: {msg}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    """The `dlkit` argument parser with its subcommands."""
    p = _Parser(prog="dlkit", description="Train, verify and inspect the models of the notes.")
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("list", help="list models (with their metadata), recipes or tasks")
    s.add_argument("what", choices=["models", "recipes", "tasks"])
    s.add_argument("pattern", nargs="?", help="a substring or shell pattern, e.g. 'resnet*'")
    s.add_argument("--task", help="only models or recipes of this task, e.g. classification: for models a task of "
                   "`dlkit list tasks`, for recipes one of the task column of `dlkit list recipes` (sequence, "
                   "fundamentals, ...)")
    s.add_argument("--pretrained", action="store_true", help="only models with pretrained weights")
    s.set_defaults(func=cmd_list)

    s = sub.add_parser("show", help="a recipe's description, expected result and every option with its default")
    s.add_argument("recipe")
    s.set_defaults(func=cmd_show)

    s = sub.add_parser("run", help="train, evaluate and report a recipe")
    s.add_argument("recipe")
    s.add_argument("--epochs", type=int)
    s.add_argument("--device", metavar="DEVICE", help="cpu, cuda or cuda:N (default: the recipe's, cpu)")
    s.add_argument("--seed", type=int)
    s.add_argument("--set", action="extend", nargs="+", metavar="KEY=VALUE",
                   help="override options: --set lr=0.01 epochs=3 (or --set repeated)")
    s.add_argument("--out", help="run folder (default runs/RECIPE/TIMESTAMP)")
    s.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last good checkpoint")
    s.add_argument("--overwrite", action="store_true",
                   help="replace the run already in --out (its files are deleted first)")
    s.add_argument("--smoke", action="store_true", help="a few steps on a tiny subset")
    s.add_argument("--data-dir", help="data root (default: $DLKIT_DATA, else ~/.cache/dlkit)")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("verify", help="run recipes as registered and check their expected results")
    s.add_argument("recipe", nargs="?")
    s.add_argument("--all", action="store_true")
    s.add_argument("--device", choices=["cpu", "cuda"])
    s.add_argument("--data-dir")
    s.add_argument("--results", default="results/verify", help="folder for RECIPE.json records")
    s.set_defaults(func=cmd_verify)

    s = sub.add_parser("predict", help="classify image files (top classes) or segment them (mask PNGs) with a run")
    s.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by dlkit run (model.json + weights)")
    s.add_argument("files", nargs="+", metavar="FILE", help="image files (png, jpg, ...)")
    s.add_argument("--top", type=int, default=5, help="classes shown per file (classification; default 5)")
    s.add_argument("--out", help="folder for the mask PNGs of a segmentation run (default: the current folder)")
    s.add_argument("--overwrite", action="store_true", help="replace mask files already in --out (refused otherwise)")
    s.add_argument("--device", choices=["cpu", "cuda"])
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("export", help="export a run's model (torch.export program or ONNX), checked by reloading")
    s.add_argument("run_dir", metavar="RUN_DIR")
    s.add_argument("--format", choices=["exported-program", "onnx"], default=None,
                   help="default: as --out's suffix says (.pt2, .onnx), else exported-program")
    s.add_argument("--out", help="a .pt2 or .onnx file, or a folder, to write to (default RUN_DIR/model.pt2 or "
                   "RUN_DIR/model.onnx, which a new export replaces)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing --out file (refused otherwise)")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("summary", help="per-layer table of output shapes, parameters and multiply-adds")
    s.add_argument("model", nargs="?")
    s.add_argument("--compare", metavar="NAMES", help="instead of MODEL: comma-separated detectors (and classifiers), "
                   "e.g. rcnn_alexnet,fast_rcnn_alexnet: their conv and FF FLOPs per image (the notes' Table 4.1)")
    s.add_argument("--proposals", type=int, default=2000, help="with --compare: proposals per image (n)")
    s.add_argument("--num-classes", type=int, help="with --compare: build the models with this many classes")
    s.add_argument("--input-shape", help="one sample's shape without the batch, e.g. 3,224,224; for a model "
                   "that reads token ids, the sequence length, e.g. 64")
    s.set_defaults(func=cmd_summary)

    s = sub.add_parser("status", help="write docs/STATUS.md from the registries and results/verify")
    s.add_argument("--out", default="docs/STATUS.md")
    s.add_argument("--results", default=None, help="folder of verify records (default results/verify here, else "
                   "the source checkout's)")
    s.set_defaults(func=cmd_status)

    s = sub.add_parser("report", help="(re)build a run folder's report.html")
    s.add_argument("run_dir")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("coco-eval", help="COCO mAP of a results file against a ground-truth file (as pycocotools)")
    s.add_argument("gt", metavar="GT.json", help="COCO ground truth: images, annotations, categories")
    s.add_argument("detections", metavar="DETECTIONS.json",
                   help="COCO results: a list of {image_id, category_id, bbox or segmentation, score}")
    s.add_argument("--iou-type", choices=["bbox", "segm"], default="bbox")
    s.add_argument("--json", metavar="OUT", help="also write the 12 numbers to this JSON file")
    s.set_defaults(func=cmd_coco_eval)
    return p


def _out_of_memory(e: BaseException) -> bool:
    """Whether `e` says that an allocation failed (CPU or GPU): a size the machine cannot hold, not a bug."""
    text = str(e)
    return isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError" or (
        isinstance(e, RuntimeError) and ("can't allocate memory" in text or "not enough memory" in text))


def main(argv: list[str] | None = None) -> int:
    """Run the `dlkit` command line; the exit code (0, 1: a recipe missed its expected result, 2: an error)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and getattr(args, "func", None) is cmd_list and args.pattern is None and len(extra) == 1 \
            and not extra[0].startswith("-"):
        args.pattern = extra[0]  # `dlkit list recipes --task X PATTERN`: argparse takes no positional after an option
    elif extra:
        parser.parse_args(argv)  # its one-line error for what it does not recognise
    formatter = warnings.formatwarning  # warnings shown as one line each, without the source line that raised them
    warnings.formatwarning = _one_line_warning
    try:
        return _run_command(args)
    finally:
        warnings.formatwarning = formatter


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"dlkit: warning: {' '.join(str(message).split())}\n"


def _run_command(args) -> int:
    try:
        return args.func(args)
    except Preempted as e:  # SIGTERM/SIGINT during training: checkpoint saved, exit 128 + the signal's number
        print(f"dlkit: {' '.join(str(e).split())}", file=sys.stderr)
        return e.exit_code
    except DlkitError as e:
        if args.debug:
            raise
        msg = " ".join(str(e).split())
        print(f"dlkit: error: {msg}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as e:
        if args.debug or not _out_of_memory(e):
            raise
        first = " ".join(str(e).split())[:160]
        print(f"dlkit: error: out of memory ({type(e).__name__}: {first}); use smaller sizes (batch_size, widths, "
              "--input-shape) or a machine with more memory", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dlkit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`dlkit show R | head`): not an error
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 -- the interpreter flushes stdout at exit
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
