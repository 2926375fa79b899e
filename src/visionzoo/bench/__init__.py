"""Measure models: parameters, FLOPs/MACs, depth, memory, latency, export.

`profile.profile_model` computes a model's card figures (one image, no timing);
`timing` runs the latency/throughput benchmark; `optimize.optimize` is the inference
fast path (BatchNorm folded into convolutions, channels-last); `export` writes ONNX and
torch.export files and checks them; `reported` loads the published figures.
"""

from visionzoo.bench.profile import profile_model

__all__ = ["profile_model"]
