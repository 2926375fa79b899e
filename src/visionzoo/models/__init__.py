"""Architecture families, one module each. Importing this package registers every variant.

Modules are discovered rather than listed, so adding a family is adding a file.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_") and _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")
