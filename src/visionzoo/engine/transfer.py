"""Transfer learning: start a model from another run's or a reference library's weights.

The head is reset for the new classes (every tensor whose shape differs because the class
count differs), the first convolution is adapted when the input channels differ (3 -> 1:
sum the RGB kernels, which is what a gray image of equal R, G and B would see; 1 -> 3:
divide by three and repeat), and everything else must match exactly.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn

from visionzoo.convert import WeightMismatchError, check_state_dict, get_converter
from visionzoo.errors import UserError

StateDict = dict[str, Tensor]


def source_state_dict(source: str, model_name: str) -> StateDict:
    """The weights named by --init, as a state dict in visionzoo's layout."""
    if source.startswith(("torchvision:", "timm:")):
        lib, _, ref_name = source.partition(":")
        state = fetch_reference_weights(lib, ref_name)
        try:
            return get_converter(model_name, lib)(dict(state))
        except WeightMismatchError as err:
            raise UserError(f"--init {source}: {err}") from None
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
    """ImageNet weights through torchvision's or timm's own download code (needs the network).

    Tests replace this function to feed state dicts built locally from the constructors.
    """
    try:
        if lib == "torchvision":
            import torchvision

            return torchvision.models.get_model_weights(name).DEFAULT.get_state_dict(progress=True)
        import timm

        return timm.create_model(name, pretrained=True).state_dict()
    except (ValueError, KeyError, RuntimeError) as err:
        raise UserError(f"--init {lib}:{name}: {str(err).splitlines()[0]}") from None
    except OSError as err:
        raise UserError(f"--init {lib}:{name}: could not download the weights ({err})") from None


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
    heads = [model.get_classifier()] if hasattr(model, "get_classifier") else []
    prefixes = []
    for name, module in model.named_modules():
        if any(module is h for h in heads) or name.split(".")[-1].startswith("aux"):
            prefixes.append(name + ".")
    return tuple(prefixes) or ("classifier.",)


def source_classes(source: str) -> list[str] | None:
    """The class names the --init weights were trained for (None: ImageNet's 1000)."""
    if source.startswith(("torchvision:", "timm:")):
        return None
    from visionzoo.runs import read_config

    return list(read_config(Path(source)).get("class_names", []))


def initialise(model: nn.Module, source: str, class_names: list[str] | None = None) -> list[str]:
    """Load --init weights into `model`; returns the names of the reset (head) tensors.

    The head is reset whenever the new task's classes differ from the source's, also when
    their number happens to be the same (Fashion-MNIST -> MNIST: 10 and 10).
    """
    state = source_state_dict(source, model.model_name)
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
