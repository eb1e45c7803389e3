"""`run_recipe`: train, evaluate and report a recipe into a run folder.

The run folder holds config.json, metrics.csv, checkpoints/, model.safetensors + model.json (what
`dlkit.load_run` rebuilds the model from), figures/, summary.json and report.html. `--resume DIR`
continues from the newest intact checkpoint; a run killed before its first checkpoint is restarted
from step 0 with the configuration it saved. Paths are checked and the folder is locked for this
process before any work (dlkit.run_folder); `--set` on `--resume` may change only RESUME_OPTIONS, and
config.json records such changes under `resumes`.
"""

from __future__ import annotations

import csv
import gc
import json
import os
import sys
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..engine import global_state
from ..engine.callbacks import LambdaCallback
from ..engine.checkpoint import list_checkpoints, load_latest_checkpoint
from ..engine.distributed import barrier, broadcast_object, cleanup, init_distributed
from ..engine.logger import echo
from ..engine.seeding import seed_everything
from ..engine.trainer import Trainer, fit, has_length
from ..errors import ConfigError, DlkitError
from ..run_folder import (
    RunLock,
    check_output_path,
    claim_run_dir,
    discard_unstarted_run,
    drop_set_aside,
    restore_set_aside,
)
from .options import Config, make_config, parse_value, set_option, trainer_config
from .registry import Recipe, Setup, Study, get_recipe
from .verify import git_commit

# Options that `--set` may change on `--resume`: they steer what is still to come (how long, how fast, where,
# how often to evaluate, log and checkpoint, when to stop, how to clip) and leave what was already computed
# valid. Any other option (model sizes, data, batch_size, seed, optimizer, schedule shape, EMA, precision,
# memory format...) shaped the weights and optimizer state in the checkpoint, so changing it is refused.
RESUME_OPTIONS = ("lr", "epochs", "max_steps", "device", "threads", "data_dir", "log_every", "progress",
                  "tensorboard", "eval_every_epochs", "eval_every_steps", "checkpoint_every_steps",
                  "checkpoint_every_minutes", "keep_checkpoints", "early_stopping_patience", "grad_clip_norm",
                  "grad_clip_value")


def _read_run_config(recipe: Recipe, run_dir: Path) -> dict:
    """The run folder's config.json, checked: a JSON object naming this recipe, with options of the right types."""
    saved = run_dir / "config.json"
    if not saved.is_file():
        raise ConfigError(f"--resume {run_dir}: expected a run folder with config.json (written by dlkit run); "
                          "none found")

    def damaged(why: str) -> ConfigError:
        return ConfigError(f"--resume {run_dir}: {saved} is damaged or not a dlkit run configuration ({why}); start "
                           "a new run with --out, or replace this one with --overwrite")

    try:
        meta = json.loads(saved.read_text())
    except (OSError, ValueError, RecursionError) as e:
        raise damaged(f"not readable JSON: {type(e).__name__}") from None
    if not (isinstance(meta, dict) and isinstance(meta.get("config"), dict) and isinstance(meta.get("recipe"), str)):
        raise damaged('expected {"recipe": NAME, "config": {...}, ...}')
    resumes = meta.get("resumes", [])
    if not (isinstance(resumes, list) and all(isinstance(r, dict) and type(r.get("step")) is int
                                              and isinstance(r.get("overrides"), dict) for r in resumes)):
        raise damaged('expected "resumes" to be a list of {"step": N, "overrides": {...}}')
    if meta["recipe"] != recipe.name:
        raise ConfigError(f"--resume {run_dir}: that folder is a run of recipe '{meta['recipe']}', not "
                          f"'{recipe.name}'; run `dlkit run {meta['recipe']} --resume {run_dir}`")
    types = recipe.option_types()
    for key, value in meta["config"].items():
        if key in types:
            try:
                parse_value(key, value, types[key])
            except ConfigError as e:
                raise damaged(f"option {key}: {e}") from None
    return meta


def _resumed_config(recipe: Recipe, run_dir: Path, overrides: Mapping) -> tuple[Config, bool, dict]:
    """The saved configuration of the run in `run_dir` with `overrides` applied, whether it was a smoke run, and
    the options that changed ({key: (saved, new)}); an override of an option outside RESUME_OPTIONS that changes
    its value is refused."""
    meta = _read_run_config(recipe, run_dir)
    cfg = Config({**recipe.options(), **meta["config"]})
    saved = dict(cfg)
    changed = {}
    for key, text in overrides.items():
        set_option(recipe, cfg, key, text)
        if dict.__getitem__(cfg, key) != saved[key]:
            changed[key] = (saved[key], dict.__getitem__(cfg, key))
    refused = sorted(k for k in changed if k not in RESUME_OPTIONS)
    if refused:
        allowed = ", ".join(k for k in RESUME_OPTIONS if k in cfg)
        raise ConfigError(f"--resume {run_dir}: {', '.join(refused)} cannot change on resume (the run so far was "
                          f"computed with {', '.join(f'{k}={saved[k]!r}' for k in refused)}); a resumed run may "
                          f"change only {allowed}. Start a new run (--out or --overwrite) to change the others")
    length = sorted(k for k in changed if k in ("epochs", "max_steps"))
    schedule = dict.get(cfg, "schedule")
    if length and schedule not in (None, "none", "constant", "plateau"):
        raise ConfigError(f"--resume {run_dir}: the run's lr schedule '{schedule}' was laid out over its length "
                          f"({', '.join(f'{k}={saved[k]!r}' for k in length)}), so a new length would continue the "
                          "old schedule (past its end: the final lr, tiny; before it: never annealed). Resume with "
                          "the same length, or start a new run (--out or --overwrite) with the new one")
    return cfg, bool(meta.get("smoke", False)), changed


def _prepare_resume(run_dir: Path, cfg: Config, changed: dict) -> float | None:
    """Record a resume that changes options in config.json (`config` then holds the values in use from now on,
    and `resumes` gets {step, overrides, previous}) and return the learning rate the restored optimizer must take:
    the config's lr when this resume changes it, or when an earlier resume changed it and no checkpoint written
    since holds it (that run was stopped before its next checkpoint); else None (the checkpoint's own)."""
    path = run_dir / "config.json"
    meta = json.loads(path.read_text())  # checked by _read_run_config
    lr_resumes = [r for r in meta.get("resumes", []) if "lr" in r["overrides"]]
    if not changed and not lr_resumes:
        return None
    with warnings.catch_warnings():  # the Trainer reports a fallback past a damaged checkpoint itself
        warnings.simplefilter("ignore")
        _, newest = load_latest_checkpoint(run_dir / "checkpoints")  # the one the Trainer will continue from
    step = int(newest.stem.split("_")[-1])
    if changed:
        meta["config"] = dict(cfg)
        meta.setdefault("resumes", []).append({"step": step, "overrides": {k: new for k, (_, new) in changed.items()},
                                               "previous": {k: old for k, (old, _) in changed.items()}})
        _write_config(path, meta)
    if "lr" in changed or any(r["step"] >= step for r in lr_resumes):
        return dict.__getitem__(cfg, "lr")
    return None


def _write_config(path: Path, meta: dict) -> None:
    """Write config.json whole or not at all (a temporary file renamed over it)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2, default=str))
    os.replace(tmp, path)


def _on_main(fn, dist):
    """`fn()` on rank 0, its result on every rank; a DlkitError of rank 0 is raised on every rank (none hangs)."""
    result, error = None, None
    if dist.is_main:
        try:
            result = fn()
        except DlkitError as e:
            if not dist.enabled:
                raise
            error = str(e)
    result, error = broadcast_object((result, error), dist)
    if error is not None:
        raise ConfigError(error)
    return result


def run_recipe(name: str, *, overrides: Mapping | None = None, epochs: int | None = None, device: str | None = None,
               seed: int | None = None, out: str | Path | None = None, resume: str | Path | None = None,
               smoke: bool = False, data_dir: str | None = None, report: bool = True,
               overwrite: bool = False) -> dict:
    """Train, evaluate and report recipe `name`; return its summary (also written to summary.json), whose
    `run_dir` is the run folder. The folder is locked for this process while it runs; `out` onto a folder
    holding a previous run is refused unless `overwrite` (which deletes that run's files first)."""
    recipe = get_recipe(name)
    if overrides is not None and not isinstance(overrides, Mapping):
        raise ConfigError(f"overrides must be a mapping of option -> value, e.g. {{'epochs': 2, 'lr': 0.01}}; got "
                          f"{type(overrides).__name__} {str(overrides)[:80]}")
    overrides = dict(overrides or {})
    for key, val in (("epochs", epochs), ("device", device), ("seed", seed), ("data_dir", data_dir)):
        if val is not None:
            if key in overrides and overrides[key] != val:
                raise ConfigError(f"{key} is given twice, as {key}={val!r} and in overrides as {overrides[key]!r}; "
                                  "keep one")
            overrides[key] = val
    changed: dict = {}
    if recipe.study and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(f"recipe '{name}' is a study of several trainings, which runs in one process (under "
                          f"torchrun each process would run the whole study into one folder); run it without "
                          f"torchrun: `dlkit run {name}`")
    if resume is not None:
        if recipe.study:
            raise ConfigError(f"recipe '{name}' is a study of several trainings, which cannot be resumed; run it "
                              "again without --resume")
        if overwrite:
            raise ConfigError(f"--resume continues the run in {resume} and --overwrite replaces it; pass one of them")
        if out is not None and Path(out) != Path(resume):
            raise ConfigError(f"--out {out} and --resume {resume} name two folders; a resumed run stays in its "
                              "folder, so pass only --resume")
        run_dir: Path | None = check_output_path(resume, "--resume", must_exist=True)
        asked_smoke = smoke
        cfg, smoke, changed = _resumed_config(recipe, run_dir, overrides)
        if asked_smoke and not smoke:
            raise ConfigError(f"--resume {run_dir}: that run is a full run and continues as one; --smoke applies to "
                              "new runs only, so resume without it")
        if (run_dir / "summary.json").is_file() and not {"epochs", "max_steps"} & set(changed):
            raise ConfigError(f"--resume {run_dir}: that run finished (its result is in summary.json), so there is "
                              f"nothing left to train; resume it with a longer length (--epochs N or --set "
                              f"max_steps=N) to train it further, rebuild its report with `dlkit report {run_dir}`, "
                              "or replace it with --out DIR --overwrite")
    else:
        cfg = make_config(recipe, overrides, smoke)
        run_dir = check_output_path(out, "--out") if out is not None else None
        if run_dir is None:
            check_output_path(Path("runs") / name, "the default run folder (choose another with --out)")
    trainer_config(cfg)  # refuse bad Trainer options before anything is written
    dist = init_distributed(cfg["device"])
    lock: RunLock | None = None
    replaced: Path | None = None  # an overwritten run's files, kept until the new run is built

    def claim() -> str:  # rank 0 creates and locks the folder; the other ranks learn its name
        nonlocal lock, replaced
        path, lock, replaced = claim_run_dir(run_dir, recipe=name, smoke=smoke, resume=resume is not None,
                                             overwrite=overwrite, resumable=not recipe.study)
        return str(path)

    def built() -> None:  # the new run has trained a step (data read, model made): the run it replaces can go
        nonlocal replaced
        if replaced is not None:
            drop_set_aside(replaced)
            replaced = None

    named = run_dir is not None
    run_dir = Path(_on_main(claim, dist))
    refused = False
    try:
        return _run_in(recipe, cfg, run_dir, dist, smoke=smoke, resume=resume is not None, changed=changed,
                       report=report, overridden=set(overrides), built=built)
    except DlkitError:
        refused = True
        raise
    finally:
        if lock is not None:
            if replaced is not None:  # the new run failed before its first step: the overwritten run comes back
                restore_set_aside(replaced)
            lock.release()
            if refused and not named:
                discard_unstarted_run(run_dir)


def _run_in(recipe: Recipe, cfg: Config, run_dir: Path, dist, *, smoke: bool, resume: bool, changed: dict,
            report: bool, overridden: set[str], built=lambda: None) -> dict:
    name = recipe.name
    if resume and not list_checkpoints(run_dir / "checkpoints"):
        echo(f"no checkpoint in {run_dir}: the run was stopped before its first checkpoint; restarting it from step "
             "0 with its saved configuration", dist.is_main)
        resume = False
    if dist.is_main and not resume:
        _write_config(run_dir / "config.json", {"recipe": name, "smoke": smoke, "config": cfg,
                                                "world_size": dist.world_size})
    echo(f"run folder: {run_dir}", dist.is_main)
    seed_everything(cfg["seed"])  # the same seed on every rank: identical initial weights
    cfg.freeze()
    try:
        setup = recipe.build(cfg, dist)
    except TypeError as e:  # a dict option (scene, model_kwargs...) naming an argument its function does not take
        if "unexpected keyword argument" not in str(e):
            raise
        dicts = sorted(k for k, v in cfg.items() if isinstance(v, dict) and v)
        raise ConfigError(f"recipe '{name}': {e}; check the keys of {', '.join(dicts) or 'its options'} (see "
                          f"`dlkit show {name}`)") from None
    if isinstance(setup, Study) != recipe.study:
        raise TypeError(f"recipe '{name}': its builder returned a {type(setup).__name__}, so study must be "
                        f"{isinstance(setup, Study)}")
    if isinstance(setup, Study):
        built()
        return _run_study(recipe, cfg, setup, run_dir, smoke, report, overridden)
    epoch_options = sorted({"epochs", "eval_every_epochs"} & overridden)
    if epoch_options and not has_length(setup.train):
        raise ConfigError(f"recipe '{name}' trains on an endless stream counted in steps, so {', '.join(epoch_options)}"
                          " would do nothing; set max_steps (and eval_every_steps) instead")
    trainer = Trainer(setup.task, setup.train, setup.val, trainer_config(cfg), run_dir=run_dir, dist=dist,
                      callbacks=setup.callbacks, val_prefix=setup.val_name)
    # last, so that checkpoints' callback states keep their order; a no-op after the first step
    trainer.callbacks.append(LambdaCallback(on_step_end=lambda trainer, out: built()))
    new_lr = None  # a changed lr acts on the restored optimizer and schedule
    if resume:  # recorded once the run is built: a run that fails to build used none of the new values
        new_lr = _on_main(lambda: _prepare_resume(run_dir, cfg, changed), dist)
    trainer.fit(resume=run_dir if resume else None, lr=new_lr)
    seconds = trainer.train_seconds  # of every segment of a resumed run
    summary: dict[str, Any] = {}
    metrics = dict(trainer.last_metrics)
    if setup.test is not None:  # on every rank: metric states are summed over the ranks
        with global_state.restored():
            metrics.update(trainer.evaluate(setup.test, "test"))
    if dist.is_main and setup.comparison is not None:
        with global_state.restored():
            metrics.update(setup.comparison(run_dir, dict(metrics)))
    if dist.is_main:
        summary = _summary(recipe, cfg, metrics, seconds, smoke, run_dir, steps=trainer.step,
                           device=str(trainer.device), world_size=dist.world_size, stop_reason=trainer.stop_reason,
                           val_name=setup.val_name, extra=setup.extra)
        _write_outputs(run_dir, summary, trainer, setup, report)
    if dist.enabled:  # free the DDP wrapper (its reducer holds the process group) before the group is destroyed
        trainer = None
        gc.collect()
    barrier(dist)
    cleanup(dist)
    return summary


def fit_baseline(setup: Setup, cfg: Mapping, prefix: str) -> dict[str, float]:
    """A comparison's baseline (`Setup.comparison`): `setup`'s task trained by the headless `fit()` (no run folder,
    checkpoint, progress bar or mid-run evaluation) with the Trainer options of `cfg`, then scored on `setup.test`;
    its metrics as 'PREFIX/NAME' plus 'PREFIX/train_seconds'."""
    quiet = dict(progress=False, tensorboard=False, checkpoint_every_minutes=None, eval_every_epochs=None)
    result = fit(setup.task, setup.train, setup.test, trainer_config(cfg, **quiet))
    out = {f"{prefix}/{k.split('/', 1)[1]}": v for k, v in result.metrics.items() if k.startswith("val/")}
    out[f"{prefix}/train_seconds"] = round(result.seconds, 1)
    return out


def _summary(recipe: Recipe, cfg: Config, metrics: dict, seconds: float, smoke: bool, run_dir: Path, *, steps: int,
             device: str, world_size: int, stop_reason: str, val_name: str = "val", extra: dict | None = None) -> dict:
    value = float(metrics.get(recipe.metric, float("nan")))
    return {
        "recipe": recipe.name, "task": recipe.task, "notes": recipe.notes, "metric": recipe.metric, "value": value,
        "threshold": recipe.threshold, "higher_is_better": recipe.higher_is_better, "passed": recipe.passed(value),
        "seconds": round(seconds, 2), "budget_s": recipe.budget_s, "steps": steps,
        "epochs": dict.get(cfg, "epochs"), "smoke": smoke, "device": device, "world_size": world_size,
        "torch": torch.__version__, "commit": git_commit(), "stop_reason": stop_reason, "metrics": metrics,
        "seconds_to_threshold": seconds_to_threshold(run_dir / "metrics.csv", recipe, val_name),
        "run_dir": str(run_dir), **(extra or {}),
    }


def seconds_to_threshold(metrics_csv: Path, recipe: Recipe, val_name: str = "val") -> float | None:
    """Wall time of training at which the evaluated counterpart of the recipe's metric (e.g. val/accuracy for
    test/accuracy) first reached the threshold, read from metrics.csv; None if it never did."""
    name = f"{val_name}/" + recipe.metric.split("/", 1)[-1]
    if not metrics_csv.is_file():
        return None
    with open(metrics_csv, newline="") as f:
        for row in csv.DictReader(f):
            if row["name"] == name and recipe.passed(float(row["value"])):
                return float(row["wall_time"])
    return None


def _run_study(recipe: Recipe, cfg: Config, study: Study, run_dir: Path, smoke: bool, report: bool,
               overridden: set[str]) -> dict:
    (run_dir / "figures").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with global_state.restored():
        if cfg["threads"] is not None:
            torch.set_num_threads(cfg["threads"])
        metrics = {k: float(v) for k, v in study.run(run_dir).items()}
    seconds = time.perf_counter() - t0
    ignored = sorted(overridden - cfg.read)  # set by the user yet never read: a bug of the recipe
    if ignored:
        print(f"note: recipe '{recipe.name}' did not read the option(s) {', '.join(ignored)}: setting them had no "
              "effect", file=sys.stderr)
    summary = _summary(recipe, cfg, metrics, seconds, smoke, run_dir, steps=int(metrics.get("steps", 0)),
                       device=cfg["device"], world_size=1, stop_reason="", extra=study.extra)
    summary["ignored_options"] = ignored
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    if report:
        from ..report.html import build_report

        build_report(run_dir)
    return summary


def _write_outputs(run_dir: Path, summary: dict, trainer: Trainer, setup: Setup, report: bool) -> None:
    from safetensors.torch import save_file

    from ..engine.logger import MetricLogger

    new = {k: v for k, v in summary["metrics"].items() if k.startswith("test/") and k not in trainer.last_metrics}
    logger = MetricLogger(run_dir, tensorboard=False, resume_step=trainer.step, seconds=trainer.train_seconds,
                          replacing=new)
    epoch = min(trainer.epoch + 1, trainer.cfg.epochs) if trainer.sized else 1  # 1-based, as the Trainer logs
    logger.log(trainer.step, epoch, new)  # the test split's scores, unless the loop already logged them as its own
    logger.close()
    model = trainer.eval_model
    save_file({k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()},
              str(run_dir / "model.safetensors"))
    if setup.model_spec is not None:
        spec = {"recipe": summary["recipe"], "task": summary["task"], **setup.model_spec}
        (run_dir / "model.json").write_text(json.dumps(spec, indent=2, default=str))
    if report:
        from ..report.figures import plot_curves
        from ..report.html import build_report

        (run_dir / "figures").mkdir(exist_ok=True)
        plot_curves(run_dir / "metrics.csv", run_dir / "figures")
        was = model.training
        model.eval()
        with torch.no_grad(), global_state.restored():
            setup.task.figures(run_dir, model, setup.test if setup.test is not None else setup.val)
        model.train(was)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    if report:
        build_report(run_dir)
