"""Transfer learning: start a model from another run's or a reference library's weights.

The head is reset for the new classes (every tensor whose shape differs because the class
count differs), the first convolution is adapted when the input channels differ (3 -> 1:
sum the RGB kernels, which is what a gray image of equal R, G and B would see; 1 -> 3:
divide by three and repeat), and everything else must match exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from torch import Tensor, nn

from visionzoo.convert import WeightMismatchError, check_state_dict, get_converter
from visionzoo.errors import UserError

StateDict = dict[str, Tensor]


LIBRARIES = ("torchvision", "timm", "hf")


def is_library_spec(source: str) -> bool:
    """torchvision[:NAME], timm[:NAME] or hf:ORG/NAME (the specs of `load_pretrained`)."""
    return source in ("torchvision", "timm") or source.startswith(
        tuple(f"{lib}:" for lib in LIBRARIES)
    )


def is_weights_file(source: str) -> bool:
    from visionzoo.pretrained import FILE_SUFFIXES

    path = Path(source).expanduser()
    return path.is_file() or (path.suffix in FILE_SUFFIXES and not path.is_dir())


def source_state_dict(source: str, model_name: str) -> StateDict:
    """The weights named by --init, as a state dict in visionzoo's layout.

    A weights file (.pth/.pt/.bin/.safetensors) is returned as read; `initialise` detects its
    layout (ours, torchvision's, timm's, transformers') against the model.
    """
    if is_library_spec(source):
        from visionzoo.registry import get_model_info

        lib, _, ref_name = source.partition(":")
        if not ref_name:  # the model's own default, as load_pretrained takes it
            info = get_model_info(model_name)
            ref_name = (info.torchvision_name if lib == "torchvision" else info.timm_name) or ""
            ref_name = ref_name or model_name
        state = fetch_reference_weights(lib, ref_name)
        try:
            return get_converter(model_name, lib)(dict(state))
        except (WeightMismatchError, KeyError) as err:
            raise UserError(f"--init {source}: {err}") from None
    if is_weights_file(source):
        from visionzoo.pretrained import load_state_dict_file

        return load_state_dict_file(Path(source).expanduser())
    from safetensors.torch import load_file

    from visionzoo.runs import WEIGHTS, read_config

    run = Path(source)
    config = read_config(run)
    if config["model"] != model_name:
        raise UserError(
            f"--init {run} holds a {config['model']!r} run; it cannot initialise {model_name!r}"
        )
    if not (run / WEIGHTS).is_file():
        raise UserError(f"--init {run} holds no {WEIGHTS}")
    return load_file(run / WEIGHTS)


def fetch_reference_weights(lib: str, name: str) -> StateDict:
    """Published weights through `visionzoo.pretrained.fetch_weights` (the libraries' caches;
    offline: one line naming the file and folder), in the library's own layout.

    Tests replace this function to feed state dicts built locally from the constructors.
    """
    from visionzoo.pretrained import fetch_weights

    try:
        return fetch_weights("", f"{lib}:{name}").state_dict
    except UserError as err:
        raise UserError(f"--init {lib}:{name}: {err}") from None
    except (ValueError, KeyError, RuntimeError) as err:
        raise UserError(f"--init {lib}:{name}: {str(err).splitlines()[0]}") from None
    except OSError as err:
        raise UserError(f"--init {lib}:{name}: could not download the weights ({err})") from None


def detect_layout(model: nn.Module, state: StateDict, source: str) -> StateDict:
    """A weights file's tensors in our layout: as they are, or through whichever registered
    converter (torchvision, timm, hf, ...) gives every tensor of the model's body."""
    from visionzoo.convert import known_sources

    heads = head_prefixes(model)
    target = model.state_dict().keys()
    body = {k for k in target if not k.startswith(heads)}
    closest: tuple[int, str] | None = None
    for layout in ["visionzoo", *known_sources()]:
        if layout == "visionzoo":
            converted = dict(state)
        else:
            try:
                converted = get_converter(_registry_name(model), layout)(dict(state))
            except (WeightMismatchError, KeyError):
                continue
        missing = sorted(body - converted.keys())
        extra = sorted(converted.keys() - target)
        if not missing and not extra:
            return converted
        missing = missing or [f"{k} (unexpected)" for k in extra]
        if closest is None or len(missing) < closest[0]:
            shown = ", ".join(missing[:3]) + (
                f" (+{len(missing) - 3} more)" if len(missing) > 3 else ""
            )
            closest = (len(missing), f"as {layout} weights, {len(missing)} missing: {shown}")
    name = _registry_name(model)
    hint = closest[1] if closest else f"no converter for {name}"
    raise UserError(f"--init {source} fits {name} in no known layout; closest: {hint}")


def _registry_name(model: nn.Module) -> str:
    """The name create_model recorded on `model` (its class name for other modules)."""
    name = getattr(model, "model_name", None)
    return name if isinstance(name, str) else type(model).__name__


def adapt_state_dict(model: nn.Module, state: StateDict) -> tuple[StateDict, list[str]]:
    """Fit `state` to `model`: adapt input channels, drop head tensors sized for other classes.

    Returns the adapted state dict and the names of the tensors left freshly initialised.
    """
    target = model.state_dict()
    out: StateDict = {}
    reset: list[str] = []
    for key, value in state.items():
        if key not in target:
            continue
        want = target[key]
        if value.shape == want.shape:
            out[key] = value
        elif (
            value.dim() == 4
            and value.shape[0] == want.shape[0]
            and value.shape[2:] == want.shape[2:]
        ):
            out[key] = adapt_in_channels(value, want.shape[1])
        else:
            reset.append(key)
    missing = [k for k in target if k not in out and k not in reset]
    head = head_prefixes(model)
    not_head = [k for k in reset + missing if not k.startswith(head)]
    if not_head:
        shown = ", ".join(not_head[:4]) + (
            f" (+{len(not_head) - 4} more)" if len(not_head) > 4 else ""
        )
        raise UserError(f"--init weights do not fit this architecture: {shown}")
    return out, reset + missing


def adapt_in_channels(weight: Tensor, channels: int) -> Tensor:
    have = weight.shape[1]
    if channels == 1:
        return weight.sum(1, keepdim=True)
    if have == 1:
        return weight.repeat(1, channels, 1, 1) / channels
    raise UserError(f"cannot adapt a first convolution from {have} to {channels} input channels")


def head_prefixes(model: nn.Module) -> tuple[str, ...]:
    """State-dict prefixes of the classifier (and auxiliary classifiers) of `model`."""
    heads = [cast(Any, model).get_classifier()] if hasattr(model, "get_classifier") else []
    prefixes = []
    for name, module in model.named_modules():
        if any(module is h for h in heads) or name.split(".")[-1].startswith("aux"):
            prefixes.append(name + ".")
    return tuple(prefixes) or ("classifier.",)


def source_classes(source: str) -> list[str] | None:
    """The class names the --init weights were trained for (None: ImageNet's 1000)."""
    if is_library_spec(source) or is_weights_file(source):
        return None
    from visionzoo.runs import read_config

    return list(read_config(Path(source)).get("class_names", []))


def initialise(model: nn.Module, source: str, class_names: list[str] | None = None) -> list[str]:
    """Load --init weights into `model`; returns the names of the reset (head) tensors.

    The head is reset whenever the new task's classes differ from the source's, also when
    their number happens to be the same (Fashion-MNIST -> MNIST: 10 and 10).
    """
    from visionzoo.models.migrate import migrate_state_dict

    state = migrate_state_dict(model, source_state_dict(source, _registry_name(model)))
    if is_weights_file(source):
        state = detect_layout(model, state, source)
    theirs = source_classes(source)
    same_task = class_names is not None and theirs is not None and list(class_names) == theirs
    if not same_task:
        heads = head_prefixes(model)
        state = {k: v for k, v in state.items() if not k.startswith(heads)}
    adapted, reset = adapt_state_dict(model, state)
    missing, unexpected = model.load_state_dict(adapted, strict=False)
    assert not unexpected, unexpected
    try:
        check_state_dict(model, {**model.state_dict(), **adapted})
    except WeightMismatchError as err:  # pragma: no cover - adapt_state_dict guarantees this
        raise UserError(str(err)) from None
    return reset


def set_body_trainable(model: nn.Module, trainable: bool, head_keys: list[str]) -> None:
    """Freeze (or unfreeze) every parameter except the head's."""
    prefixes = head_prefixes(model)
    for name, p in model.named_parameters():
        if not name.startswith(prefixes) and name not in head_keys:
            p.requires_grad_(trainable)


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = ["adapt_state_dict", "initialise", "set_body_trainable"]
