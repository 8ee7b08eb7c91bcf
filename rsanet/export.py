"""Export a trained model for deployment with PyTorch's own exporters, and check the export against eager.

Formats (the input is a normalized clip batch (B, 3, T, S, S), T = model.num_segments, S = the test crop
size; the output (B, num_classes) logits; B is dynamic in every format):

* ``torchscript``: ``torch.jit.trace`` (a ``.pt`` file for ``torch.jit.load`` / libtorch). PyTorch marks
  TorchScript as deprecated in favour of ``torch.export``; it is kept for C++ deployments that still use it.
* ``exported_program``: ``torch.export.export`` saved with ``torch.export.save`` (a ``.pt2`` file).
* ``onnx``: ``torch.onnx.export(..., dynamo=True)``, which needs the ``onnx`` and ``onnxscript`` packages;
  ``onnxruntime`` runs the exported graph for the comparison. Without onnxruntime the graph is only
  validated with ``onnx.checker`` and :func:`verify_export` says that outputs were not compared.

:func:`verify_export` compares the exported model with the eager one on sample inputs of two batch sizes.
:func:`write_metadata` writes what a deployment needs besides the graph (input shape, normalization, class
names) as JSON next to the file.
"""
from __future__ import annotations

import importlib.util
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from torch import nn

from rsanet.config import Config, config_to_dict

__all__ = ["FORMATS", "ExportDependencyError", "ExportError", "Comparison", "input_shape", "sample_inputs",
           "export_model", "load_exported", "verify_export", "write_metadata"]

FORMATS = ("torchscript", "exported_program", "onnx")
_MAX_BATCH = 4096  # upper bound of the dynamic batch dimension (torch.export needs one)


class ExportDependencyError(ImportError):
    """A package that the chosen export format needs is not installed; the message says which."""


class ExportError(RuntimeError):
    """The exporter could not capture the model; the message gives the exporter's reason."""


@dataclass
class Comparison:
    """Exported vs eager outputs on one input: the largest absolute difference (None: not compared)."""

    batch: int
    max_abs_diff: Optional[float]
    note: str = ""

    def ok(self, atol: float) -> bool:
        return self.max_abs_diff is not None and self.max_abs_diff <= atol


def input_shape(cfg: Config, batch: int = 1) -> tuple[int, int, int, int, int]:
    """(B, 3, T, S, S) of the model's test-time input."""
    size = cfg.test.crop_size or cfg.data.crop_size
    return batch, 3, cfg.model.num_segments, size, size


def sample_inputs(cfg: Config, batches: Sequence[int] = (2, 3), seed: int = 0) -> list[torch.Tensor]:
    """Standard-normal inputs (roughly what normalized clips look like) of the given batch sizes."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(input_shape(cfg, b), generator=gen) for b in batches]


def _require(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ExportDependencyError(f"ONNX export needs the package(s) {', '.join(missing)}: "
                                    f"pip install {' '.join(missing)}  (onnxruntime as well, to compare outputs)")


def _dynamic_batch() -> dict:
    return {"x": {0: torch.export.Dim("batch", min=1, max=_MAX_BATCH)}}


@torch.no_grad()
def export_model(model: nn.Module, example: torch.Tensor, fmt: str, out: str | os.PathLike) -> Path:
    """Export ``model`` (put in eval mode) traced on ``example`` (B >= 2, so that the batch stays dynamic)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose from {list(FORMATS)}")
    if example.shape[0] < 2:
        raise ValueError("export needs an example batch of at least 2 clips (a batch of 1 would be baked in)")
    out = Path(out)
    if fmt == "exported_program" and out.suffix != ".pt2":
        raise ValueError(f"--out {out}: torch.export programs are saved as .pt2 files; use a name ending in .pt2")
    model.eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "torchscript":
        with warnings.catch_warnings():  # deprecation notice and shape-check TracerWarnings
            warnings.simplefilter("ignore")
            try:
                torch.jit.save(torch.jit.trace(model, example, check_trace=False), str(out))
            except RuntimeError as e:
                reason = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
                raise ExportError(f"TorchScript export failed: {reason.strip()} (the exported_program and onnx "
                                  "formats capture the model with torch.export instead)") from None
    elif fmt == "exported_program":
        program = torch.export.export(model, (example,), dynamic_shapes=_dynamic_batch())
        torch.export.save(program, str(out))
    else:
        _require("onnx", "onnxscript")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), str(out), dynamo=True, dynamic_shapes=_dynamic_batch(),
                              input_names=["clips"], output_names=["logits"], verbose=False)
    return out


def load_exported(path: str | os.PathLike, fmt: str) -> tuple[Optional[Callable[[torch.Tensor], torch.Tensor]], str]:
    """A callable running the exported file, or (None, why) when it cannot be run here (ONNX without
    onnxruntime: the graph is then checked with ``onnx.checker``)."""
    path = str(path)
    if fmt == "torchscript":
        with warnings.catch_warnings():  # torch.jit.load's deprecation notice
            warnings.simplefilter("ignore")
            return torch.jit.load(path, map_location="cpu"), ""
    if fmt == "exported_program":
        return torch.export.load(path).module(), ""
    _require("onnx")
    import onnx

    onnx.checker.check_model(onnx.load(path), full_check=True)
    if importlib.util.find_spec("onnxruntime") is None:
        return None, "onnx.checker passed; outputs not compared: onnxruntime is not installed (pip install onnxruntime)"
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return (lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])), ""


@torch.no_grad()
def verify_export(model: nn.Module, path: str | os.PathLike, fmt: str,
                  inputs: Sequence[torch.Tensor]) -> list[Comparison]:
    """Largest |exported - eager| over the logits of each input (CPU, float32)."""
    model = model.eval().cpu()
    run, why = load_exported(path, fmt)
    results = []
    for x in inputs:
        if run is None:
            results.append(Comparison(x.shape[0], None, why))
            continue
        diff = (run(x).float() - model(x).float()).abs().max().item()
        results.append(Comparison(x.shape[0], float(diff)))
    return results


def write_metadata(path: str | os.PathLike, cfg: Config, fmt: str, classes: Optional[Sequence[str]],
                   checkpoint: str | os.PathLike) -> Path:
    """``<file>.json`` next to the export: format, input layout and shape, normalization, class names."""
    shape = list(input_shape(cfg))
    shape[0] = -1  # dynamic batch
    meta = {"format": fmt, "input": "clips", "output": "logits", "input_shape": shape,
            "input_layout": "(B, C=3, T, H, W), RGB in [0, 1], normalized with mean/std", "mean": cfg.data.mean,
            "std": cfg.data.std, "classes": list(classes) if classes is not None else None,
            "checkpoint": str(checkpoint), "model": config_to_dict(cfg.model),
            "torch": torch.__version__}
    out = Path(str(path) + ".json")
    out.write_text(json.dumps(meta, indent=2) + "\n")
    return out
