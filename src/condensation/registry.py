"""Name -> factory registries (timm style): one per axis, an unknown name lists the valid ones."""
from __future__ import annotations

import dataclasses
import math
import types
import typing
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
    """Build a frozen config dataclass from overrides, rejecting unknown keys by name and values whose type
    is not the field's (a TOML ``ipc = "2"`` or a ``--objective-set real_per_class=abc`` fails here, naming
    the field, rather than as a TypeError deep inside torch)."""
    if not isinstance(overrides, (dict, type(None))):
        raise ConfigError(f"{what} settings must be a table of key = value, got {type(overrides).__name__}")
    overrides = dict(overrides or {})
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown {what} setting(s) {', '.join(k if k.isprintable() else repr(k) for k in unknown)}; "
            f"allowed: {', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(config_class)
    checked = {key: _checked(value, hints.get(key), f"{what} setting '{key}'") for key, value in overrides.items()}
    try:
        return config_class(**checked)
    except (TypeError, ValueError) as error:  # a config's own checks may still meet an odd combination
        raise ConfigError(f"bad {what} settings: {error}") from None


_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a table"}


def _checked(value: Any, hint: Any, where: str) -> Any:
    """``value`` if it has the type ``hint`` asks for (ints pass as floats, lists as tuples), else ConfigError.
    Hints this does not know (nested configs, paths) are passed through unchecked."""
    if hint is None or hint is Any:
        return value
    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in arguments:
            return None
        errors = []
        for option in (a for a in arguments if a is not type(None)):
            try:
                return _checked(value, option, where)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if len(errors) == 1 else
                          f"{where} has the wrong type: got {value!r} ({type(value).__name__})")
    if origin is tuple and arguments:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r} ({type(value).__name__})")
        element = arguments[0]
        return tuple(_checked(item, element, f"{where}[{i}]") for i, item in enumerate(value))
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table, got {value!r} ({type(value).__name__})")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r} ({type(value).__name__})")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r} ({type(value).__name__})")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r} ({type(value).__name__})")
        if not math.isfinite(value):
            raise ConfigError(f"{where} must be a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r} ({type(value).__name__})")
        return value
    return value


def config_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
