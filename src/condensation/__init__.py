"""Dataset condensation with data parameterization: containers x objectives x evaluation protocols.

The main entry points load on first use (``import condensation`` stays light and cycle-free)::

    from condensation import RunConfig, distill, evaluate_artifact, load_artifact
    condensation.list_recipes(), list_containers(), list_objectives(), list_datasets(), list_networks(),
    list_protocols()
"""
__version__ = "0.1.0"

from .lazy import lazy_getattr  # noqa: E402 (after __version__, which submodules import)

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


__getattr__ = lazy_getattr(__name__, _LAZY)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
