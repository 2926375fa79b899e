"""Export a model to ONNX or torch.export, run the file, and compare its logits.

`export_model(model, "onnx", x)` writes the file, runs it with onnxruntime (ONNX) or by
loading the saved ExportedProgram (torch.export), and returns the largest absolute logit
difference from the eager model. ONNX is exported with the dynamo exporter (torch.export +
onnxscript) with dynamic batch, height and width where the model allows them (a dynamic batch
only for fixed-size models such as ViTs), falling back to the TorchScript exporter when that
fails; the result says which one wrote the file. Weights stay inside the .onnx file below
2 GB (protobuf's limit).
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "FORMATS",
    "ExportResult",
    "export_model",
    "export_program",
    "onnx_session",
    "to_onnx",
    "to_torch_export",
]

FORMATS = ("onnx", "torch-export")
SUFFIX = {"onnx": ".onnx", "torch-export": ".pt2"}
TOLERANCE = 1e-4


@dataclass
class ExportResult:
    format: str
    path: Path | None
    max_abs_diff: float | None
    ok: bool
    exporter: str = ""
    error: str = ""
    logit_scale: float | None = None  # max |logit| of the eager model, to read the diff against

    @property
    def relative_diff(self) -> float | None:
        if self.max_abs_diff is None or not self.logit_scale:
            return None
        return self.max_abs_diff / self.logit_scale

    def line(self, name: str) -> str:
        """One line for the terminal."""
        if self.error:
            return f"{name}: {self.format} export failed: {self.error}"
        verdict = "ok" if self.ok else f"FAILED (> {TOLERANCE:g})"
        rel = f" ({self.relative_diff:.1e} of the largest logit)" if self.relative_diff else ""
        return (
            f"{name}: {self.format} -> {self.path} ({self.exporter}); "
            f"max |logit diff| = {self.max_abs_diff:.2e}{rel} {verdict}"
        )


def _quiet() -> contextlib.ExitStack:
    """The exporters print progress and warnings; keep the terminal to our one line."""
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    return stack


def _batch_of_two(x: Tensor) -> Tensor:
    """torch.export specializes a batch of 1: export with 2, run with any."""
    return x if x.shape[0] > 1 else x.expand(2, *x.shape[1:]).clone()


def dynamic_shape_options(model: nn.Module, x: Tensor) -> list[dict | None]:
    """The dynamic shapes to try, most dynamic first: batch, height and width; batch only;
    none. Height and width start one pixel above the model's smallest input: at that size
    the last map is 1x1, a size torch.export specializes."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    contract = getattr(model, "input_contract", None)
    low = (contract().min_size if contract else 1) + 1
    options: list[dict | None] = [{"x": {0: batch}}, None]
    if min(x.shape[-2:]) >= low:
        h = torch.export.Dim("height", min=low, max=4096)
        w = torch.export.Dim("width", min=low, max=4096)
        options.insert(0, {"x": {0: batch, 2: h, 3: w}})
    return options


def export_program(
    model: nn.Module, x: Tensor, dynamic_size: bool = True
) -> torch.export.ExportedProgram:
    """`torch.export.export` with dynamic batch, height and width where the model allows it
    (ViTs, whose position embeddings fix the size, keep a fixed size), else fewer."""
    x = _batch_of_two(x)
    options = dynamic_shape_options(model, x)
    if not dynamic_size:
        options = options[-2:]
    with _quiet():
        for shapes in options[:-1]:
            try:
                return torch.export.export(model.eval(), (x,), dynamic_shapes=shapes)
            except Exception:  # noqa: BLE001 - the model pins this size; try a less dynamic one
                continue
        return torch.export.export(model.eval(), (x,))


# protobuf's limit: larger models keep their weights in a .onnx.data file beside the graph
ONNX_SINGLE_FILE_LIMIT = 2 * 1024**3 - 64 * 1024**2


def _weight_bytes(model: nn.Module) -> int:
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def _write_onnx(
    model: nn.Module,
    x: Tensor,
    path: Path,
    exporter: str = "auto",
    program: torch.export.ExportedProgram | None = None,
) -> str:
    """Write the ONNX file; returns the exporter that succeeded ("dynamo", "torchscript")."""
    x = _batch_of_two(x)
    errors = []
    for kind in ("dynamo", "torchscript") if exporter == "auto" else (exporter,):
        try:
            with _quiet():
                if kind == "dynamo":
                    torch.onnx.export(
                        program if program is not None else export_program(model, x),
                        (x,),
                        str(path),
                        dynamo=True,
                        external_data=_weight_bytes(model) >= ONNX_SINGLE_FILE_LIMIT,
                        input_names=["x"],
                        output_names=["logits"],
                        verbose=False,
                    )
                else:
                    torch.onnx.export(
                        model.eval(),
                        (x,),
                        str(path),
                        dynamo=False,
                        input_names=["x"],
                        output_names=["logits"],
                        dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
                    )
            return kind
        except Exception as err:  # noqa: BLE001 - try the next exporter, report all
            errors.append(f"{kind}: {_first_line(err)}")
    raise RuntimeError("; ".join(errors))


def to_onnx(
    model: nn.Module, x: Tensor, path: str | Path | None = None, exporter: str = "auto"
) -> Path:
    """Write `model` to ONNX with dynamic batch, height and width where the model allows it
    (dynamo exporter; the TorchScript fallback keeps a fixed size); returns the path. The
    weights are inside the file below 2 GB, in `path.data` beside it above.

    `exporter`: "dynamo" (torch.export + onnxscript), "torchscript", or "auto" (dynamo,
    then TorchScript if it fails).
    """
    path = Path(path) if path else Path(tempfile.mkdtemp(prefix="visionzoo-")) / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_onnx(model, x, path, exporter)
    return path


def onnx_session(path: str | Path) -> Any:
    """An onnxruntime CPU session using as many threads as torch does.

    Its worker threads do not spin after a run: by default they busy-wait for the next one,
    and on a 2-core machine that took the cores from whatever ran next (in `bench`, the
    model timed after onnxruntime looked up to 2x slower at batch 1).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def to_torch_export(
    model: nn.Module,
    x: Tensor,
    path: str | Path | None = None,
    program: torch.export.ExportedProgram | None = None,
) -> Path:
    """Save the model's ExportedProgram (dynamic batch) as a .pt2 file; returns the path."""
    path = Path(path) if path else Path(tempfile.mkdtemp(prefix="visionzoo-")) / "model.pt2"
    path.parent.mkdir(parents=True, exist_ok=True)
    program = program if program is not None else export_program(model, x)
    with _quiet():
        torch.export.save(program, str(path))
    return path


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    msg = next((line.strip() for line in text if line.strip()), "")
    return f"{type(err).__name__}: {msg}"[:200]


@torch.no_grad()
def export_model(
    model: nn.Module,
    fmt: str,
    x: Tensor,
    path: str | Path | None = None,
    exporter: str = "auto",
    program: torch.export.ExportedProgram | None = None,
) -> ExportResult:
    """Export, run the exported file on `x`, compare with the eager logits.

    `program`: an ExportedProgram of `model` to reuse (saves tracing it again).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; use one of {FORMATS}")
    model = model.eval()
    expected = model(x).float()
    default = Path(tempfile.mkdtemp(prefix="visionzoo-")) / f"model{SUFFIX[fmt]}"
    written = Path(path) if path else default
    written.parent.mkdir(parents=True, exist_ok=True)
    try:
        if fmt == "onnx":
            used = _write_onnx(model, x, written, exporter, program)
            session = onnx_session(written)
            got = session.run(None, {session.get_inputs()[0].name: x.cpu().numpy()})[0]
            got_t = torch.from_numpy(got)
        else:
            to_torch_export(model, x, written, program)
            with _quiet():
                got_t = torch.export.load(str(written)).module()(x)
            used = "torch.export"
    except Exception as err:  # noqa: BLE001 - the caller prints one line per variant
        if os.environ.get("VISIONZOO_DEBUG"):
            raise
        return ExportResult(fmt, None, None, False, exporter, error=_first_line(err))
    diff = float((got_t.float() - expected).abs().max())
    scale = float(expected.abs().max())
    return ExportResult(fmt, written, diff, diff <= TOLERANCE, used, logit_scale=scale)
