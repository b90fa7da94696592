"""What the library offers, by name: ``condensation.list_recipes()`` and the rest (``condense list`` prints them)."""
from __future__ import annotations


def list_recipes() -> list[str]:
    """The named methods (recipes/*.toml)."""
    from .recipes import RECIPES

    return sorted(RECIPES)


def list_containers() -> list[str]:
    from .containers import CONTAINERS

    return sorted(CONTAINERS.names())


def list_objectives() -> list[str]:
    from .objectives import OBJECTIVES

    return sorted(OBJECTIVES.names())


def list_datasets() -> list[str]:
    from .data import DATASETS

    return sorted(DATASETS.names())


def list_networks() -> list[str]:
    from .networks import NETWORKS

    return sorted(NETWORKS.names())


def list_protocols() -> list[str]:
    from .evaluation import PROTOCOLS

    return sorted(PROTOCOLS)
