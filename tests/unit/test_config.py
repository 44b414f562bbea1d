"""Config dataclasses: validation messages, JSON round trip, unknown keys."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ptychopinn.config import (
    ExecutionConfig,
    InferenceConfig,
    ModelConfig,
    RunConfig,
    SimulationConfig,
    TrainingConfig,
)
from ptychopinn.config_fields import is_int
from ptychopinn.config_files import load_config_file
from ptychopinn.errors import ConfigError, PtychoInputError


def test_defaults_are_valid_and_round_trip() -> None:
    run = RunConfig()
    again = RunConfig.from_json(run.to_json())
    assert again == run
    assert json.loads(run.to_json())["model"]["N"] == 64


@pytest.mark.parametrize("N", [32, 40, 64, 128, 200, 256])
def test_model_accepts_multiples_of_8(N: int) -> None:
    assert ModelConfig(N=N).N == N


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"N": 60}, "'N': expected a multiple of 8"),
    ({"N": 24}, "'N': expected an integer in \\[32, 256\\]"),
    ({"N": 512}, "'N'"),
    ({"gridsize": 0}, "'gridsize'"),
    ({"amp_activation": "tanh"}, "'amp_activation': expected one of"),
    ({"model_type": "gan"}, "'model_type'"),
    ({"probe_scale": -1.0}, "'probe_scale'"),
    ({"object_big": "yes"}, "'object_big': expected true or false"),
])
def test_model_config_errors(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        ModelConfig(**kwargs)


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"nphotons": -5.0}, "'nphotons': expected a finite number > 0"),
    ({"nphotons": float("inf")}, "'nphotons'"),
    ({"batch_size": 0}, "'batch_size'"),
    ({"nepochs": 1.5}, "'nepochs'"),
    ({"scheduler": "step"}, "'scheduler': expected one of"),
    ({"nll_weight": 0.0, "mae_weight": 0.0}, "at least one of"),
    ({"val_fraction": 0.95}, "'val_fraction'"),
    ({"n_groups": 0}, "'n_groups'"),
])
def test_training_config_errors(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        TrainingConfig(**kwargs)


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"accelerator": "tpu"}, "'accelerator'"),
    ({"devices": 0}, "'devices': expected a positive integer or 'auto'"),
    ({"precision": "64"}, "'precision'"),
    ({"logger": "wandb"}, "'logger'"),
    ({"strategy": "fsdp"}, "'strategy'"),
])
def test_execution_config_errors(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        ExecutionConfig(**kwargs)


def test_unknown_keys_are_rejected_with_the_valid_ones_listed() -> None:
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['nepoch'\]; valid keys are"):
        TrainingConfig.from_dict({"nepoch": 3})
    with pytest.raises(ConfigError, match="unknown field"):
        ModelConfig().replace(gridsize_=2)


def test_errors_are_value_errors_for_callers() -> None:
    assert issubclass(ConfigError, PtychoInputError)
    assert issubclass(ConfigError, ValueError)


def test_inference_window_default_matches_reference_at_64() -> None:
    assert InferenceConfig().window_for(64) == 20
    assert InferenceConfig(stitch_window=100).window_for(64) == 64


def test_simulation_ranges_validated() -> None:
    with pytest.raises(ConfigError, match="'amplitude_range'"):
        SimulationConfig(amplitude_range=(1.0, 0.5))
    with pytest.raises(ConfigError, match="'object_size'"):
        SimulationConfig(N=64, object_size=32)
    assert SimulationConfig().to_dict()["amplitude_range"] == [0.5, 1.0]


def test_run_config_accepts_nested_dicts_and_rejects_bad_sections() -> None:
    run = RunConfig.from_dict({"model": {"N": 32}, "training": {"nepochs": 2}})
    assert run.model.N == 32 and run.training.nepochs == 2
    with pytest.raises(ConfigError, match="unknown key"):
        RunConfig.from_dict({"modle": {}})
    with pytest.raises(ConfigError, match="not valid JSON"):
        RunConfig.from_json("{nope")


def test_config_files_json_and_yaml(tmp_path) -> None:
    j = tmp_path / "c.json"
    j.write_text('{"training": {"nepochs": 3}}')
    assert load_config_file(j) == {"training": {"nepochs": 3}}
    y = tmp_path / "c.yaml"
    y.write_text("model:\n  gridsize: 2\n")
    assert load_config_file(y) == {"model": {"gridsize": 2}}
    with pytest.raises(ConfigError, match="config file not found"):
        load_config_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config_file(bad)


@pytest.mark.parametrize("value, expected", [
    (3, True), (np.int64(3), True), (np.uint8(3), True), (-2, True),
    (True, False), (np.bool_(True), False), (3.0, False), (np.float64(3.0), False), ("3", False), (None, False),
])
def test_is_int_counts_numpy_integers_but_not_bools_or_floats(value: object, expected: bool) -> None:
    assert is_int(value) is expected


def test_numpy_integer_fields_are_stored_as_int() -> None:
    # A value read from an NPZ/HDF5 file is a numpy integer: accepted, kept as int so the config stays JSON.
    cfg = TrainingConfig(batch_size=np.int64(8), nepochs=np.int32(2), nphotons=np.int64(1000))
    assert type(cfg.batch_size) is int and type(cfg.nepochs) is int and type(cfg.nphotons) is int
    assert json.loads(json.dumps(cfg.to_dict()))["batch_size"] == 8
    with pytest.raises(ConfigError):
        TrainingConfig(batch_size=np.bool_(True))
