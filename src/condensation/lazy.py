"""Package attributes that load their module on first use, so that importing a package stays light."""
from __future__ import annotations

import importlib
import sys
from typing import Callable


def lazy_getattr(package: str, table: dict[str, str]) -> Callable[[str], object]:
    """A module-level ``__getattr__`` for ``package``: name -> the submodule (in ``table``) that defines it."""
    def __getattr__(name: str):
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module '{package}' has no attribute '{name}'")
        value = getattr(importlib.import_module(f".{module}", package), name)
        vars(sys.modules[package])[name] = value  # later lookups skip __getattr__
        return value

    return __getattr__
