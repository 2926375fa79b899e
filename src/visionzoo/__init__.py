"""visionzoo: every landmark image-classification network, from scratch, verified and compared."""

__version__ = "0.1.0"

from visionzoo.backbone import backbone  # noqa: E402
from visionzoo.bench.optimize import optimize  # noqa: E402
from visionzoo.pretrained import load_pretrained  # noqa: E402
from visionzoo.registry import (  # noqa: E402
    ModelInfo,
    create_model,
    get_model_info,
    is_registered,
    list_families,
    list_models,
    register_model,
    unregister_model,
)

__all__ = [
    "ModelInfo",
    "__version__",
    "backbone",
    "create_model",
    "get_model_info",
    "is_registered",
    "list_families",
    "list_models",
    "load_pretrained",
    "optimize",
    "register_model",
    "unregister_model",
]
