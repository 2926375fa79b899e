"""A model's card figures for one image: parameters, FLOPs/MACs, depth, stages, memory.

`profile_model(name)` builds the variant at its default input (or `image_size`), runs one
forward pass on one random image and measures, in that single pass:

- FLOPs with `torch.utils.flop_counter.FlopCounterMode`: a multiply-add counts as 2 FLOPs,
  so MACs = FLOPs / 2. Only matrix products and convolutions are counted (activations,
  normalization, pooling and additions are left out, as in torchvision's and the papers'
  tables). torchvision's published "GFLOPS" are in fact GMACs.
- depth: the longest chain of weighted layers (convolutions and linear layers, found in
  the autograd graph of the forward pass) from input to logits. Gating branches
  (squeeze-and-excitation) multiply the main path and are not on it. Where a paper counts
  differently, `PAPER_DEPTH` says how, and both figures are kept.
- weighted_layers: every convolution and linear layer that ran.
- activation_bytes: the activations autograd keeps for the backward pass of one image
  (deduplicated by storage, parameters excluded): the per-image memory training needs.
- stages: one row per `feature_info` level (output shape, parameters, FLOPs), plus the stem
  before the first level and the head after the last, so the rows add up to the totals.

Results are cached in memory and on disk (`$VISIONZOO_CACHE`, default
`~/.cache/visionzoo`), keyed by the arguments, the family's source file and torch version.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from visionzoo.registry import create_model, get_model_info
from visionzoo.utils import atomic_write_text

__all__ = ["PAPER_DEPTH", "count_flops", "flop_counter", "graph_depth", "profile_model"]

CACHE_VERSION = 1

# Where the paper's own layer count is not the longest conv/linear path: (depth, how).
PAPER_DEPTH: dict[str, tuple[int, str]] = {
    "lenet5": (7, "paper: seven layers C1-S2-C3-S4-C5-F6-output (subsampling layers count)"),
    "lenet5_paper": (7, "paper: seven layers C1-S2-C3-S4-C5-F6-output (subsampling layers count)"),
    "inception_v3": (42, "paper: 'Although our network is 42 layers deep'"),
    "xception": (
        36,
        "paper: '36 convolutional layers forming the feature extraction base' (a separable "
        "convolution counts once; the logistic-regression layer is not counted)",
    ),
    **{
        f"{kind}_fc_{n}": (n, f"paper: depth {n} counts the hidden layers, not the softmax layer")
        for kind in ("highway", "plain")
        for n in (10, 20, 50, 100)
    },
}

# Autograd nodes of convolutions and matrix products (a linear layer is addmm/mm/bmm).
_CONV_NODES = ("ConvolutionBackward", "MkldnnConvolutionBackward", "CudnnConvolutionBackward")
_MATMUL_NODES = ("AddmmBackward", "MmBackward", "BmmBackward", "LinearBackward")
_PARAM_SEARCH_STEPS = 8  # how far (through views, transposes, index copies) a weight may hide
# Ops that move or copy a weight without computing with it: a matrix product whose operand
# reaches a parameter through these only is a linear layer. (Attention's softmax(q k^T) v
# reaches the relative position bias through an addition and a softmax: not a layer.)
_RESHAPE_NODES = (
    "ViewBackward", "ReshapeAlias", "UnsafeViewBackward", "TransposeBackward", "TBackward",
    "PermuteBackward", "ExpandBackward", "UnsqueezeBackward", "SqueezeBackward",
    "CloneBackward", "AliasBackward", "ToCopyBackward", "IndexCopyBackward",
    "SelectBackward", "SliceBackward", "UnbindBackward", "SplitBackward",
)  # fmt: skip


def _is_param_branch(node: Any, params: set[int]) -> bool:
    """Whether `node` is a parameter, or one reshaped or copied (no arithmetic on the way)."""
    stack = [(node, 0)]
    while stack:
        n, steps = stack.pop()
        if n is None:
            continue
        if type(n).__name__ == "AccumulateGrad":
            if id(n.variable) in params:
                return True
            continue
        if steps >= _PARAM_SEARCH_STEPS or not n.name().startswith(_RESHAPE_NODES):
            continue
        stack.extend((nx, steps + 1) for nx, _ in n.next_functions)
    return False


def _is_weighted(node: Any, params: set[int]) -> bool:
    """A convolution, or a matrix product with a parameter operand (not attention's q @ k)."""
    name = node.name()
    if name.startswith(_CONV_NODES):
        return True
    if name.startswith(_MATMUL_NODES):
        return any(_is_param_branch(nx, params) for nx, _ in node.next_functions)
    return False


def _main_inputs(node: Any) -> list[Any]:
    """The inputs of `node` that carry the main path.

    A product of a full tensor and a smaller broadcast one (x * gate) is a gate: only the
    full tensor is followed.
    """
    inputs = [nx for nx, _ in node.next_functions]
    if node.name().startswith("MulBackward0"):
        try:
            a, b = node._saved_self, node._saved_other
        except (AttributeError, RuntimeError):
            a = b = None
        if isinstance(a, Tensor) and isinstance(b, Tensor) and a.numel() != b.numel():
            inputs = [inputs[0] if a.numel() > b.numel() else inputs[1]]
    return [n for n in inputs if n is not None]


def _all_nodes(root: Any) -> Iterable[Any]:
    seen, stack = set(), [root]
    while stack:
        n = stack.pop()
        if n is None or n in seen:
            continue
        seen.add(n)
        yield n
        stack.extend(nx for nx, _ in n.next_functions)


def graph_depth(output: Tensor, model: nn.Module) -> tuple[int, int]:
    """(longest weighted path, number of weighted ops) in the autograd graph of `output`."""
    if output.grad_fn is None:
        return 0, 0
    params = {id(p) for p in model.parameters()}
    total = sum(1 for n in _all_nodes(output.grad_fn) if _is_weighted(n, params))
    longest: dict[Any, int] = {}
    stack: list[tuple[Any, bool]] = [(output.grad_fn, False)]
    while stack:  # iterative post-order: graphs of DenseNet/ResNet-152 are deep
        node, expanded = stack.pop()
        if node in longest:
            continue
        inputs = _main_inputs(node)
        if not expanded:
            stack.append((node, True))
            stack.extend((n, False) for n in inputs if n not in longest)
        else:
            below = max((longest[n] for n in inputs), default=0)
            longest[node] = below + int(_is_weighted(node, params))
    return longest[output.grad_fn], total


def _sdpa_cpu_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


# FlopCounterMode knows the CUDA attention kernels; the CPU one is counted the same way.
_EXTRA_FLOPS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flops}


def flop_counter() -> FlopCounterMode:
    """A silent FlopCounterMode that also counts CPU fused attention."""
    return FlopCounterMode(display=False, custom_mapping=_EXTRA_FLOPS)


def count_flops(model: nn.Module, x: Tensor) -> int:
    """FLOPs of `model(x)` as FlopCounterMode counts them (a multiply-add is 2 FLOPs)."""
    with torch.no_grad(), flop_counter() as counter:
        model(x)
    return int(counter.get_total_flops())


def _stage_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules named by `feature_info`, else the model's top-level children."""
    names = [fi.name for fi in getattr(model, "feature_info", None) or []]
    try:
        found = [(n, model.get_submodule(n)) for n in names]
    except AttributeError:
        found = []
    if found:
        return found
    return [(n, m) for n, m in model.named_children() if sum(1 for _ in m.modules())]


def _first_of_stage(model: nn.Module, name: str) -> nn.Module:
    """Where the stem ends: the first stage, or block 0 when the stage is "blocks.K"."""
    parent, _, index = name.rpartition(".")
    if parent and index.isdigit():
        container = model.get_submodule(parent)
        if isinstance(container, (nn.Sequential, nn.ModuleList)) and len(container):
            return container[0]
    return model.get_submodule(name)


def _row_names(names: list[str]) -> list[str]:
    """ "blocks.2", "blocks.5" -> "blocks.0-2", "blocks.3-5": each row's span of blocks."""
    out: list[str] = []
    previous: dict[str, int] = {}
    for name in names:
        parent, _, index = name.rpartition(".")
        if parent and index.isdigit():
            start = previous.get(parent, -1) + 1
            previous[parent] = int(index)
            out.append(f"{parent}.{start}-{index}" if start < int(index) else name)
        else:
            out.append(name)
    return out


def _count_blocks(model: nn.Module) -> int:
    """Transformer blocks: modules with a direct child attention module."""
    count = 0
    for m in model.modules():
        if "Attention" in type(m).__name__:
            continue
        if any("Attention" in type(c).__name__ for c in m.children()):
            count += 1
    return count


class _Trace:
    """Module hooks that cut one forward pass into stem, stages and head."""

    def __init__(self, model: nn.Module, counter: FlopCounterMode) -> None:
        self.counter = counter
        self.stages = _stage_modules(model)
        self.segment = 0  # 0: stem, i + 1: stage i, len(stages) + 1: head
        self.cut_flops = [0] * (len(self.stages) + 1)
        self.shapes: list[list[int] | None] = [None] * (len(self.stages) + 1)
        self.params = [0] * (len(self.stages) + 2)
        self.seen_params: set[int] = set()
        self.handles = []
        first = _first_of_stage(model, self.stages[0][0]) if self.stages else None
        for i, (_, module) in enumerate(self.stages):
            self.handles.append(module.register_forward_hook(self._stage_done(i)))
        if first is not None:
            self.handles.append(first.register_forward_pre_hook(self._stem_done))
        for module in model.modules():
            if any(True for _ in module.parameters(recurse=False)):
                self.handles.append(module.register_forward_pre_hook(self._owns))

    def _stem_done(self, module: nn.Module, args: tuple) -> None:
        if self.segment == 0:
            self.cut_flops[0] = self.counter.get_total_flops()
            if args and isinstance(args[0], Tensor):
                self.shapes[0] = list(args[0].shape[1:])
            self.segment = 1

    def _stage_done(self, i: int):
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            self.cut_flops[i + 1] = self.counter.get_total_flops()
            if isinstance(output, Tensor):
                self.shapes[i + 1] = list(output.shape[1:])
            self.segment = i + 2

        return hook

    def _owns(self, module: nn.Module, args: tuple) -> None:
        for p in module.parameters(recurse=False):
            if id(p) not in self.seen_params:
                self.seen_params.add(id(p))
                self.params[self.segment] += p.numel()

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


class _SavedActivations:
    """Bytes of the tensors autograd saves for backward, each storage counted once."""

    def __init__(self, model: nn.Module) -> None:
        self.exclude = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self.exclude |= {b.untyped_storage().data_ptr() for b in model.buffers()}
        self.storages: dict[int, int] = {}

    def pack(self, t: Tensor) -> Tensor:
        if t.device.type != "meta":
            storage = t.untyped_storage()
            ptr = storage.data_ptr()
            if ptr not in self.exclude:
                self.storages[ptr] = storage.nbytes()
        return t

    @property
    def total(self) -> int:
        return sum(self.storages.values())


def _measure(model: nn.Module, x: Tensor) -> dict[str, Any]:
    """One forward pass with grad enabled: FLOPs, stages, depth and saved activations."""
    saved = _SavedActivations(model)
    with flop_counter() as counter:
        trace = _Trace(model, counter)
        try:
            with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
                logits = model(x)
        finally:
            trace.remove()
    flops = int(counter.get_total_flops())
    depth, weighted = graph_depth(logits, model)
    stage_rows = _stage_rows(model, x, trace, flops, logits)
    return dict(flops=flops, depth=depth, weighted=weighted, stages=stage_rows, saved=saved.total)


def _stage_rows(
    model: nn.Module, x: Tensor, trace: _Trace, flops: int, logits: Tensor
) -> list[dict[str, Any]]:
    shapes = trace.shapes
    if any(s is not None and len(s) != 3 for s in shapes[1:]) and hasattr(
        model, "forward_intermediates"
    ):
        try:  # token-shaped stages: take the (C, H, W) maps the model contract provides
            with torch.no_grad():
                maps = cast(Any, model).forward_intermediates(x)
            if len(maps) == len(trace.stages):
                shapes = [shapes[0]] + [list(m.shape[1:]) for m in maps]
        except (NotImplementedError, RuntimeError, ValueError):
            pass
    cuts = trace.cut_flops
    rows = [
        {"name": "stem", "output_shape": shapes[0], "params": trace.params[0], "flops": cuts[0]}
    ]
    names = _row_names([name for name, _ in trace.stages])
    for i, name in enumerate(names):
        rows.append(
            {
                "name": name,
                "output_shape": shapes[i + 1],
                "params": trace.params[i + 1],
                "flops": cuts[i + 1] - cuts[i],
            }
        )
    rows.append(
        {
            "name": "head",
            "output_shape": list(logits.shape[1:]),
            "params": trace.params[-1],
            "flops": flops - cuts[-1],
        }
    )
    if rows[0]["params"] == 0 and rows[0]["flops"] == 0:
        rows = rows[1:]  # the first stage is the stem
    return rows


def _cache_key(name: str, image_size: int, model_kwargs: dict[str, Any]) -> str:
    info = get_model_info(name)
    module = sys.modules.get(info.module)
    try:
        source = inspect.getsource(module) if module else ""
    except (OSError, TypeError):
        source = ""
    parts = [
        str(CACHE_VERSION),
        torch.__version__,
        name,
        str(image_size),
        json.dumps(model_kwargs, sort_keys=True, default=str),
        hashlib.sha1(source.encode()).hexdigest(),
        _OWN_SOURCE_HASH,  # a change to how figures are computed invalidates the cache
    ]
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:20]


def _cache_dir() -> Path:
    root = os.environ.get("VISIONZOO_CACHE") or Path.home() / ".cache" / "visionzoo"
    return Path(root) / "profile"


_MEMORY_CACHE: dict[str, dict[str, Any]] = {}
_LOCK = threading.Lock()
_OWN_SOURCE_HASH = hashlib.sha1(Path(__file__).read_bytes()).hexdigest()


def profile_model(
    name: str, image_size: int | None = None, *, use_cache: bool = True, **model_kwargs: Any
) -> dict[str, Any]:
    """Parameters, FLOPs, MACs, depth, stages and activation memory of one image.

    `image_size` defaults to the variant's own (32 with `small_input=True`); other keyword
    arguments go to `create_model` (`in_channels=1`, `small_input=True`, `num_classes=10`).
    The result is a JSON-ready dict; see the module docstring for what each figure counts.
    """
    info = get_model_info(name)
    if image_size is None:
        image_size = 32 if model_kwargs.get("small_input") else info.image_size
    key = _cache_key(name, image_size, model_kwargs)
    if use_cache and key in _MEMORY_CACHE:
        return json.loads(json.dumps(_MEMORY_CACHE[key]))
    path = _cache_dir() / f"{name}-{key}.json"
    if use_cache and path.is_file():
        try:
            result = json.loads(path.read_text())
            _MEMORY_CACHE[key] = result
            return json.loads(json.dumps(result))
        except (OSError, ValueError):
            pass
    with _LOCK:  # FlopCounterMode is process-wide: one profile at a time (explorer threads)
        result = _profile(name, image_size, model_kwargs)
    _MEMORY_CACHE[key] = result
    if use_cache:
        try:
            atomic_write_text(path, json.dumps(result))
        except OSError:
            pass  # a read-only home: the in-memory cache still works
    return json.loads(json.dumps(result))


def _profile(name: str, image_size: int, model_kwargs: dict[str, Any]) -> dict[str, Any]:
    info = get_model_info(name)
    torch.manual_seed(0)
    model = create_model(name, image_size=image_size, **model_kwargs).eval()
    in_channels = int(getattr(model, "in_channels", info.in_channels))
    x = torch.randn(1, in_channels, image_size, image_size)
    m = _measure(model, x)
    params = sum(p.numel() for p in model.parameters())
    depth, depth_source = m["depth"], "longest path of convolutions and linear layers"
    if name in PAPER_DEPTH:
        depth, depth_source = PAPER_DEPTH[name]
    return {
        "name": name,
        "family": info.family,
        "year": info.year,
        "paper": info.paper,
        "paper_url": info.paper_url,
        "authors": info.authors,
        "key_idea": info.key_idea,
        "notes": list(info.notes),
        "params": params,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "reference_params": info.reference_params,
        "params_source": info.params_source,
        "flops": m["flops"],
        "macs": m["flops"] // 2,
        "flops_note": (
            "FlopCounterMode, one image: FLOPs = 2 x MACs; convolutions and matrix "
            "products only. torchvision's published GFLOPS are GMACs."
        ),
        "depth": depth,
        "depth_source": depth_source,
        "depth_longest_path": m["depth"],
        "weighted_layers": m["weighted"],
        "blocks": _count_blocks(model),
        "activation_bytes": m["saved"],
        "activation_note": "tensors saved for backward, one image, float32",
        "image_size": image_size,
        "in_channels": in_channels,
        "num_classes": int(getattr(model, "num_classes", info.num_classes)),
        "model_kwargs": {k: v for k, v in model_kwargs.items()},
        "stages": m["stages"],
    }
