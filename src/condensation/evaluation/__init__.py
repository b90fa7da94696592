from .evaluate import AccuracySummary, evaluate_container, evaluate_on_splits
from .protocols import PROTOCOLS, Protocol, get_protocol

__all__ = ["AccuracySummary", "evaluate_container", "evaluate_on_splits", "PROTOCOLS", "Protocol", "get_protocol"]
