"""Fuzz tests: damaged or hostile files may only ever give the library's own errors, never a traceback of
TypeError, KeyError, JSONDecodeError and the like."""
import dataclasses
import json
import math
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from condensation.artifacts import METADATA_DIGEST, load_artifact, metadata_digest, save_artifact
from condensation.containers import create_container
from condensation.data import DataSpec
from condensation.errors import ArtifactError, CondensationError
from condensation.run import RunConfig, load_run_config

from .conftest import tiny_real

# small counts: the suite runs on 2-core machines (FUZZ_EXAMPLES=2000 for a longer search by hand); the
# function-scoped fixtures in use (conftest's thread setting, tmp_path_factory) do not change between examples
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", 60)), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def _canonical(value) -> str:  # NaN != NaN, so compare values by their JSON text
    return json.dumps(value, sort_keys=True)


# --------------------------------------------------------------------------------------- metadata.json
@pytest.fixture(autouse=True)
def _subnormals_representable():
    """Runs earlier in the suite called tune_process(), which flushes denormals to zero process-wide (a speed
    setting); hypothesis refuses to draw floats then. Restore IEEE behaviour for these tests."""
    torch.set_flush_denormal(False)
    yield


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """One tiny artifact for every example (load_artifact only reads; each example rewrites metadata.json)."""
    spec = DataSpec(1, 8, 8, 3, ("a", "b", "c"), flip_allowed=False)
    real, pre = tiny_real(spec)
    container = create_container("multi_formation", spec, 1, pre)
    container.initialize(real, torch.Generator().manual_seed(0))
    directory = save_artifact(tmp_path_factory.mktemp("fuzz") / "run", container,
                              {"recipe": "test", "dataset": "x", "ipc": 1, "seed": 0,
                               "objective_values": {"learned_learning_rate": 0.02}})
    return directory, (directory / "metadata.json").read_bytes()


def _places(value, at=()):
    """Every position inside a JSON value, as a key path (the root is ())."""
    yield at
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        yield from _places(child, at + (key,))


def _changed(value, at, new, delete: bool):
    """A copy of ``value`` with the position ``at`` replaced by ``new`` (or removed)."""
    if not at:
        return new
    copy = json.loads(json.dumps(value))
    parent = copy
    for key in at[:-1]:
        parent = parent[key]
    if delete:
        del parent[at[-1]]
    else:
        parent[at[-1]] = new
    return copy


@FUZZ
@given(data=st.data(), new=json_values, delete=st.booleans(), sign=st.sampled_from(["kept", "re-signed", "old format"]))
def test_mutated_metadata_gives_only_artifact_errors(saved, data, new, delete, sign):
    directory, original_bytes = saved
    original = json.loads(original_bytes)
    at = data.draw(st.sampled_from(list(_places(original))), label="position")
    mutated = _changed(original, at, new, delete)
    if isinstance(mutated, dict) and sign == "re-signed":  # a valid digest: only the schema check can refuse
        mutated[METADATA_DIGEST] = metadata_digest(mutated)
    elif isinstance(mutated, dict) and sign == "old format":  # written before the digest existed
        mutated.pop(METADATA_DIGEST, None)
        mutated["schema_version"] = 1
    (directory / "metadata.json").write_text(json.dumps(mutated))
    try:
        load_artifact(directory)  # any exception but ArtifactError fails the test
    except ArtifactError as error:
        assert "\n" not in str(error)
        return
    if sign == "kept":  # with the digest kept, only a change that is no change may load
        assert _canonical(mutated) == _canonical(original)


@FUZZ
@given(data=st.data(), new=st.integers(-2, 40) | st.sampled_from(["pixels", "zca", "real", "noise", "a"]) | json_values,
       sign=st.sampled_from(["re-signed", "old format"]))
def test_plausible_shape_edits_give_only_artifact_errors(saved, data, new, sign):
    """Values that pass the schema (small numbers, known names) in the fields that shape the container reach
    the container code itself: what it refuses must come out as an ArtifactError too."""
    directory, original_bytes = saved
    original = json.loads(original_bytes)
    places = [at for at in _places(original) if at[:1] in (("spec",), ("container",), ("preprocessing",))]
    mutated = _changed(original, data.draw(st.sampled_from(places), label="position"), new, delete=False)
    if sign == "re-signed":
        mutated[METADATA_DIGEST] = metadata_digest(mutated)
    else:
        mutated.pop(METADATA_DIGEST)
        mutated["schema_version"] = 1
    (directory / "metadata.json").write_text(json.dumps(mutated))
    try:
        load_artifact(directory)
    except ArtifactError as error:
        assert "\n" not in str(error)


@FUZZ
@given(data=st.data(), kind=st.sampled_from(["flip", "truncate", "insert"]))
def test_damaged_metadata_bytes_give_only_artifact_errors(saved, data, kind):
    directory, original_bytes = saved
    position = data.draw(st.integers(0, len(original_bytes) - 1), label="position")
    damaged = bytearray(original_bytes)
    if kind == "flip":
        damaged[position] ^= data.draw(st.integers(1, 255), label="mask")
    elif kind == "truncate":
        del damaged[position:]
    else:
        damaged[position:position] = data.draw(st.binary(min_size=1, max_size=4), label="inserted")
    (directory / "metadata.json").write_bytes(bytes(damaged))
    try:
        artifact = load_artifact(directory)
    except ArtifactError as error:
        assert "\n" not in str(error)
        return
    assert _canonical(artifact.metadata) == _canonical(json.loads(original_bytes))  # e.g. a flip in whitespace


# ------------------------------------------------------------------------------------------ run configs
FIELDS = [field.name for field in dataclasses.fields(RunConfig)]
documents = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), json_values, max_size=5)
# most runs name their recipe and dataset: give the other keys a chance to reach build_config
named_documents = st.builds(lambda extra, recipe, dataset: {"recipe": recipe, "dataset": dataset, **extra},
                            documents, st.sampled_from(["dm", "mtt", "nope"]), st.sampled_from(["mnist", "nope"]))


def _toml(value) -> str:
    """A JSON value as a TOML value; None (TOML has no null) comes out as a syntax error, which is fine here."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else "inf" if value > 0 else "-inf"
    if isinstance(value, (int, float, str)):
        return json.dumps(value)  # JSON's strings and numbers are TOML's too
    if isinstance(value, list):
        return "[" + ", ".join(map(_toml, value)) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(key)} = {_toml(item)}" for key, item in value.items()) + "}"
    return "null"


config_files = st.one_of(
    st.tuples(st.just(".json"), (documents | named_documents | json_values).map(lambda d: json.dumps(d).encode())),
    st.tuples(st.just(".toml"), (documents | named_documents).map(
        lambda d: "\n".join(f"{json.dumps(key)} = {_toml(value)}" for key, value in d.items()).encode())),
    st.tuples(st.sampled_from([".json", ".toml"]), st.text(max_size=30).map(str.encode) | st.binary(max_size=30)),
)


# load_run_config (run.py) is not this file's to fix: when this fails, the falsifying example names the input
# and the exception that escaped, for whoever owns run.py and registry.py
@FUZZ
@given(file=config_files)
def test_random_run_configs_give_only_library_errors(tmp_path_factory, file):
    suffix, content = file
    path = tmp_path_factory.mktemp("config") / f"run{suffix}"
    path.write_bytes(content)
    try:
        load_run_config(path)  # any exception but a CondensationError fails the test
    except CondensationError as error:
        assert "\n" not in str(error)
