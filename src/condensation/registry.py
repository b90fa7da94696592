"""Name -> factory registries (timm style): one per axis, an unknown name lists the valid ones."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str | None = None) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            key = name or factory.__name__
            if key in self._factories:
                raise ValueError(f"{self.kind} '{key}' is registered twice")
            self._factories[key] = factory
            return factory

        return decorator

    def get(self, name: str) -> Callable[..., T]:
        if name not in self._factories:
            raise ConfigError(f"unknown {self.kind} '{name}'; choose one of: {', '.join(self.names())}")
        return self._factories[name]

    def create(self, name: str, *args: Any, **overrides: Any) -> T:
        return self.get(name)(*args, **overrides)

    def names(self) -> list[str]:
        return sorted(self._factories)

    def __contains__(self, name: str) -> bool:
        return name in self._factories


def build_config(config_class: type, overrides: dict[str, Any] | None, what: str) -> Any:
    """Build a frozen config dataclass from overrides, rejecting unknown keys by name."""
    overrides = dict(overrides or {})
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown {what} setting(s) {', '.join(unknown)}; allowed: {', '.join(sorted(fields))}"
        )
    return config_class(**overrides)


def config_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
