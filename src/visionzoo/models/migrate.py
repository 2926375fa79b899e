"""State-dict keys renamed since a run was saved, so older run folders still load.

Each rule maps an old key to its new name. A key is renamed only where the model has the
new key and not the old one, so keys that never changed (a family's own `bn` module, a
torchvision-layout file a converter will read) pass through untouched.
"""

from __future__ import annotations

import re

from torch import Tensor, nn

# ConvNormAct's norm child was called `bn`, also when it held a LayerNorm or GroupNorm.
RENAMES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"(^|\.)bn\.([^.]+)$"), r"\1norm.\2"),
]


def migrate_state_dict(model: nn.Module, state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """`state_dict` with old key names renamed to the ones `model` uses now."""
    expected = model.state_dict().keys()
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        new = key
        for pattern, repl in RENAMES:
            new = pattern.sub(repl, new)
        renamed = new != key and key not in expected and new in expected
        out[new if renamed and new not in state_dict else key] = value
    return out
