"""Dataset condensation with data parameterization: containers x objectives x evaluation protocols.

The main entry points load on first use (``import condensation`` stays light and cycle-free)::

    from condensation import RunConfig, distill, evaluate_artifact, load_artifact
    condensation.list_recipes(), list_containers(), list_objectives(), list_datasets(), list_networks(),
    list_protocols()
"""
__version__ = "0.1.0"

# name -> module that defines it; resolved by __getattr__ on first access
_LAZY = {
    "distill": "run",
    "RunConfig": "run",
    "evaluate_artifact": "run",
    "load_run_config": "run",
    "load_artifact": "artifacts",
    "Artifact": "artifacts",
    "export_artifact": "exports",
    **{f"list_{what}": "listing" for what in ("recipes", "containers", "objectives", "datasets", "networks", "protocols")},
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'condensation' has no attribute '{name}'")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
