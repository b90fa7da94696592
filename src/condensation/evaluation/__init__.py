from .evaluate import AccuracySummary, evaluate_container
from .protocols import PROTOCOLS, Protocol, get_protocol

__all__ = ["AccuracySummary", "evaluate_container", "PROTOCOLS", "Protocol", "get_protocol"]
