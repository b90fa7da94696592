"""Evaluation protocols (protocols.py: presets as data) and the evaluation loop (evaluate.py: networks trained on
a container's images, tested on real splits). Names load on first use, so that reading a protocol's settings
(``condense report``) does not import the training code."""
_LAZY = {
    "AccuracySummary": "evaluate", "evaluate_container": "evaluate", "evaluate_on_splits": "evaluate",
    "PROTOCOLS": "protocols", "Protocol": "protocols", "get_protocol": "protocols",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'condensation.evaluation' has no attribute '{name}'")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value
