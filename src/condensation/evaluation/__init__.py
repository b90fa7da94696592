"""Evaluation protocols (protocols.py: presets as data) and the evaluation loop (evaluate.py: networks trained on
a container's images, tested on real splits). Names load on first use, so that reading a protocol's settings
(``condense report``) does not import the training code."""
from ..lazy import lazy_getattr

_LAZY = {
    "AccuracySummary": "evaluate", "evaluate_container": "evaluate", "evaluate_on_splits": "evaluate",
    "PROTOCOLS": "protocols", "Protocol": "protocols", "get_protocol": "protocols",
}

__all__ = list(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY)
