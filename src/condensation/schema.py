"""Checks for JSON read back from disk (metadata.json, results.json, continual.json): nothing read is trusted.

A schema is a Kind (a test on one value), a dict (a JSON object with at least these keys; values are schemas,
OptionalField ones may be absent) or MapOf (an object with any keys, every value of one schema). A file that
fails is one ArtifactError line naming the file, the field and what was expected.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .errors import ArtifactError


def read_json(path: Path) -> Any:
    """A JSON file's value; a file that is not UTF-8 or not JSON (e.g. truncated) is an ArtifactError."""
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise ArtifactError(f"'{path}' is not UTF-8 text (damaged or not a JSON file)") from None
    except (ValueError, RecursionError) as error:  # JSONDecodeError is a ValueError; so are over-long integers
        raise ArtifactError(f"'{path}' is not valid JSON (truncated or damaged): {one_line(error)}") from None
    except OSError as error:
        raise ArtifactError(f"cannot read '{path}': {error.strerror or error}") from None


@dataclass(frozen=True)
class Kind:
    expected: str
    test: Callable[[Any], bool]


@dataclass(frozen=True)
class OptionalField:
    schema: Any


@dataclass(frozen=True)
class MapOf:
    schema: Any


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is not a count


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


STRING = Kind("a string", lambda v: isinstance(v, str))
STRING_OR_NULL = Kind("a string or null", lambda v: v is None or isinstance(v, str))
BOOLEAN = Kind("true or false", lambda v: isinstance(v, bool))
INTEGER = Kind("an integer", _is_int)
COUNT = Kind("an integer >= 0", lambda v: _is_int(v) and v >= 0)
POSITIVE = Kind("an integer >= 1", lambda v: _is_int(v) and v >= 1)
NUMBER = Kind("a number", _is_number)
OBJECT = Kind("an object", lambda v: isinstance(v, dict))
HEX_DIGEST = Kind("a sha256 hex digest (64 hex digits)",
                   lambda v: isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v))
STRINGS = Kind("a list of strings", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v))
NUMBERS = Kind("a list of numbers", lambda v: isinstance(v, list) and all(_is_number(x) for x in v))
LIST = Kind("a list", lambda v: isinstance(v, list))
ACCURACY = MapOf({"mean": NUMBER, "std": NUMBER, "n": COUNT})  # architecture -> accuracy over its networks


def check_schema(value: Any, schema: Any, where: str, file: Path) -> None:
    """Raise one ArtifactError line naming the first field of ``value`` that does not fit ``schema``."""
    if isinstance(schema, Kind):
        if not schema.test(value):
            raise ArtifactError(f"{file}: {where} must be {schema.expected}, got {brief(value)}")
        return
    if not isinstance(value, dict):
        raise ArtifactError(f"{file}: {where} must be an object, got {brief(value)}" if where else
                            f"{file} must hold a JSON object, got {brief(value)}")
    fields = {key: schema.schema for key in value} if isinstance(schema, MapOf) else schema
    for key, field_schema in fields.items():
        shown = key if key.isprintable() and key else json.dumps(key)  # a key from the file may hold a newline
        path = f"{where}.{shown}" if where else shown
        if isinstance(field_schema, OptionalField):
            if key not in value:
                continue
            field_schema = field_schema.schema
        if key not in value:
            raise ArtifactError(f"{file}: {path} is missing")
        check_schema(value[key], field_schema, path, file)


def brief(value: Any) -> str:
    """A value as JSON when short, else what it is: what an error line can show of it."""
    text = json.dumps(value)
    if len(text) <= 40:
        return text
    if isinstance(value, (list, dict)):
        return f"a list of {len(value)} item(s)" if isinstance(value, list) else f"an object with {len(value)} keys"
    return text[:37] + "..."


def one_line(error: BaseException) -> str:
    """An error's message on one line (torch's state-dict errors span several; a value may hold a newline)."""
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return (text if len(text) <= 300 else text[:297] + "...") or type(error).__name__
