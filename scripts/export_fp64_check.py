"""Is an ONNX export's logit error larger than eager PyTorch's own float32 error?

For the variants whose ONNX logits differ from eager by more than 1e-4 in docs/export.md,
this compares both with the same model run in float64 (the exact answer to float32
rounding): built as export_table.py builds it (seed 0, BatchNorm calibrated, smallest
input, batch of 2), exported, and run by onnxruntime with and without graph optimizations.

    OMP_NUM_THREADS=1 python scripts/export_fp64_check.py resnet101 resnet152

Writes results/bench/export_fp64_check.json, which docs/export.md shows.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from export_table import build_for_export  # noqa: E402

from visionzoo.bench.export import export_model  # noqa: E402


def check(name: str) -> dict[str, float]:
    import onnxruntime as ort

    model, x, _ = build_for_export(name)
    with torch.no_grad():
        eager = model(x)
        exact = model.double()(x.double()).float()
        model.float()
    path = Path(tempfile.mkdtemp()) / "model.onnx"
    export_model(model, "onnx", x, path)
    out = {"eager_vs_fp64": float((eager - exact).abs().max())}
    for label, level in (
        ("ort_no_opt", ort.GraphOptimizationLevel.ORT_DISABLE_ALL),
        ("ort_all_opt", ort.GraphOptimizationLevel.ORT_ENABLE_ALL),
    ):
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
        out[f"{label}_vs_eager"] = float((got - eager).abs().max())
        out[f"{label}_vs_fp64"] = float((got - exact).abs().max())
    return out


if __name__ == "__main__":
    import json

    from visionzoo.bench.timing import environment

    results = {}
    for name in sys.argv[1:] or ["resnet101", "resnet152"]:
        results[name] = check(name)
        print(name, {k: f"{v:.1e}" for k, v in results[name].items()}, flush=True)
    out = Path(__file__).resolve().parents[1] / "results/bench/export_fp64_check.json"
    out.write_text(json.dumps({"results": results, "environment": environment()}, indent=1))
    print(f"wrote {out} (python scripts/export_table.py --report-only shows it in docs)")
