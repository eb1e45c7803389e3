"""Export a trained run for use without dlkit: a `torch.export` program (model.pt2) or an ONNX graph
(model.onnx), each checked by reloading it and comparing its outputs with the eager model's
(Notes: 000 §1.2: a network is a fixed function of its input; the exported graph must compute the same one).

The batch dimension is exported as dynamic where the network allows it, so the file serves any batch size;
the check runs the reloaded file on a random batch of another size than the one it was traced with.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ConfigError
from ..report.summary import default_input_shape, required_inputs, takes_tokens
from ..runs import LoadedRun

FORMATS = {"exported-program": "model.pt2", "onnx": "model.onnx"}


@dataclass
class ExportCheck:
    """An exported file and its check: the largest |exported - eager| output difference on a random batch."""

    path: Path
    format: str
    input_shape: tuple[int, ...]
    dynamic_batch: bool
    max_abs_diff: float
    passed: bool
    how: str = ""  # which exporter wrote it
    error: str = ""  # why the written file could not be run to check it (then not passed)

    def describe(self) -> str:
        batch = "dynamic batch" if self.dynamic_batch else "fixed batch"
        if self.error:
            return (f"wrote {self.path} ({self.format}, {self.how}, {batch}), but could NOT check it: running it "
                    f"failed ({self.error}); for ONNX, install onnxruntime (pip install onnxruntime) to check with "
                    "it, or export --format exported-program")
        verdict = "equal to" if self.passed else "DIFFERENT from"
        return (f"wrote {self.path} ({self.format}, {self.how}, {batch}); reloaded and run on a random input "
                f"{list(self.input_shape)}: {verdict} the eager model (max |difference| {self.max_abs_diff:.2e})")


def example_input(run: LoadedRun, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """A random batch in the run's input layout: normal values [batch, C, H, W] (the padded size where training
    padded), else random token ids [batch, length] for a token model (a GPT: its vocabulary, a sequence of
    `default_input_shape` length), else normal values of the model's `default_input_shape`."""
    g = torch.Generator().manual_seed(seed)
    device = next(iter(run.model.parameters())).device
    spec = run.input
    if spec:
        shape = (spec["channels"], *(spec.get("pad_to") or spec["size"]))
    elif takes_tokens(run.model):
        inputs = required_inputs(run.model)
        if inputs != 1:
            raise ConfigError(f"{type(run.model).__name__} takes {inputs} inputs (a source and a target); dlkit export "
                              "writes models of one input")
        vocab = getattr(run.model, "vocab_size", None) or next(
            m for m in run.model.modules() if isinstance(m, torch.nn.Embedding)).num_embeddings  # its first layer
        return torch.randint(vocab, (batch, *default_input_shape(run.model)), generator=g).to(device)
    else:
        shape = getattr(run.model, "default_input_shape", None)
        if shape is None:
            raise ConfigError(f"{run.run_dir}/model.json has no input record and the model no default_input_shape: "
                              "the input layout to export with is unknown")
    return torch.randn(batch, *shape, generator=g).to(device)


def _export_program(model: torch.nn.Module, x: torch.Tensor):
    batch = torch.export.Dim("batch", min=1, max=4096)
    try:
        return torch.export.export(model, (x,), dynamic_shapes=({0: batch},)), True
    except Exception:  # a network whose code fixes the batch size (e.g. a reshape by a constant) exports static
        return torch.export.export(model, (x,)), False


SUFFIXES = {".pt2": "exported-program", ".onnx": "onnx"}


def export_path(run_dir: Path, format: str | None, out: str | os.PathLike | None, overwrite: bool = False
                ) -> tuple[Path, str]:
    """Where to write and in which format: `format`, else the one `out`'s suffix names (.pt2, .onnx), else
    exported-program; `out` a folder (an existing one, or a new path without a suffix): the default file name in
    it. Refused: another suffix (a .safetensors or .txt path would be overwritten by a program), a suffix that names
    the other format (a .onnx file holding a torch.export program would mislead whoever opens it), and an existing
    file other than the run folder's own export unless `overwrite`."""
    if format is not None and format not in FORMATS:
        raise ConfigError(f"export format must be one of {', '.join(FORMATS)}; got {format!r}")
    path = Path(out) if out is not None else None
    folder = path is not None and (path.is_dir() or (not path.suffix and not path.exists()))
    if path is not None and not folder and path.suffix.lower() not in SUFFIXES:
        raise ConfigError(f"--out {path}: name the file .pt2 (exported-program) or .onnx (onnx), or pass a folder; "
                          f"got the suffix {path.suffix or '(none)'!r}")
    named = SUFFIXES.get(path.suffix.lower()) if path is not None and not folder else None
    if format is not None and named is not None and named != format:
        raise ConfigError(f"--out {path} names an {named} file but --format is {format}; name it "
                          f"{path.with_suffix(Path(FORMATS[format]).suffix)} or drop --format")
    format = format or named or "exported-program"
    if path is None:
        path = run_dir / FORMATS[format]
    elif folder:
        path = path / FORMATS[format]
    blocking = next((p for p in path.parents if p.is_file()), None)
    if blocking is not None:
        raise ConfigError(f"--out {path}: {blocking} is a file, so no folder can be made there; pass another --out")
    own = path.resolve() == (run_dir / FORMATS[format]).resolve()  # this run's export, written again
    if path.exists() and not own and not overwrite:
        raise ConfigError(f"--out {path} exists; dlkit export does not replace files: pass another --out, or "
                          "--overwrite to replace it")
    return path, format


def export_run(run: LoadedRun, format: str | None = None, out: str | os.PathLike | None = None,
               rtol: float = 1e-4, atol: float = 1e-5, overwrite: bool = False) -> ExportCheck:
    """Export `run`'s model to `format` ("exported-program" or "onnx"; None: as `out`'s suffix says, else
    exported-program) at `out` (a file, or a folder to write model.pt2 / model.onnx in; default the run folder),
    reload the file, and compare its outputs with the eager model's on a random batch (allclose)."""
    path, format = export_path(run.run_dir, format, out, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = run.model.eval()
    x = example_input(run, batch=2)
    with torch.no_grad():
        y = model(x)
    if not isinstance(y, torch.Tensor):
        raise ConfigError(f"{type(model).__name__} ({run.task} run) returns a {type(y).__name__}, not one tensor, "
                          "for an input batch; dlkit export writes networks that map one tensor to one tensor "
                          "(classifiers, segmenters, transformer language models such as the char-GPT); use "
                          "dlkit.load_run for the others")
    if format == "exported-program":
        with torch.no_grad():
            program, dynamic = _export_program(model, x)
        torch.export.save(program, str(path))
        loaded = torch.export.load(str(path)).module()
        how = f"torch.export, torch {torch.__version__}"
        run_file = lambda t: loaded(t)
    else:
        dynamic, how, run_file = _export_onnx(model, x, path)
    check_x = example_input(run, batch=3 if dynamic else 2, seed=1)
    with torch.no_grad():
        want = model(check_x).float().cpu()
        try:
            got = torch.as_tensor(run_file(check_x)).float().cpu()
        except Exception as e:  # noqa: BLE001 -- e.g. onnx.reference lacking an operator's variant
            error = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:160] if str(e).strip() else ''}"
            return ExportCheck(path, format, tuple(check_x.shape), dynamic, float("nan"), False, how, error)
    diff = (got - want).abs().max().item() if got.shape == want.shape else float("inf")
    passed = got.shape == want.shape and torch.allclose(got, want, rtol=rtol, atol=atol)
    return ExportCheck(path, format, tuple(check_x.shape), dynamic, diff, passed, how)


def _export_onnx(model: torch.nn.Module, x: torch.Tensor, path: Path):
    if importlib.util.find_spec("onnx") is None:
        raise ConfigError("ONNX export needs the onnx package: pip install onnx (or use --format exported-program)")
    import onnx

    names = dict(input_names=["input"], output_names=["output"])
    if importlib.util.find_spec("onnxscript") is not None:  # the torch.export-based exporter
        batch = torch.export.Dim("batch", min=1, max=4096)
        torch.onnx.export(model, (x,), str(path), dynamo=True, dynamic_shapes=({0: batch},), external_data=False,
                          verbose=False,
                          **names)
        how = "torch.onnx.export (dynamo)"
    else:  # the TorchScript-based exporter: needs only the onnx package
        with warnings.catch_warnings():  # its deprecation and tracer notes: the check below is what counts
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (x,), str(path), dynamo=False, dynamic_axes={"input": {0: "batch"}},
                              **names)
        how = "torch.onnx.export (TorchScript)"
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph)
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        run_file = lambda t: session.run(None, {"input": t.cpu().numpy()})[0]
        how += ", checked with onnxruntime"
    else:
        from onnx.reference import ReferenceEvaluator

        evaluator = ReferenceEvaluator(graph)
        run_file = lambda t: evaluator.run(None, {"input": t.cpu().numpy()})[0]
        how += ", checked with onnx.reference"
    return True, how, run_file
