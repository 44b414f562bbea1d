"""Argument-level tests of ``python -m ptycho_torch.train`` / ``.inference``: every flag maps onto the core
configs, deprecated flags warn, 'False' never becomes True, bad values are ConfigError / exit code 2."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from ptycho_torch import inference as tinf
from ptycho_torch import train as ttrain
from ptychopinn.errors import ConfigError

BASE = ["--train_data_file", "t.npz", "--output_dir", "out"]


def test_train_flags_map_to_core_configs() -> None:
    cfg = ttrain.build_args([*BASE, "--test_data_file", "v.npz", "--max_epochs", "7", "--n_groups", "300",
                             "--gridsize", "1", "--batch_size", "8", "--accelerator", "cpu", "--no-deterministic",
                             "--num-workers", "2", "--learning-rate", "5e-4", "--scheduler", "Exponential",
                             "--accumulate-grad-batches", "2", "--quiet", "--disable-checkpointing",
                             "--checkpoint-save-top-k", "3", "--checkpoint-monitor", "val_loss",
                             "--checkpoint-mode", "min", "--early-stop-patience", "4", "--logger", "none"])
    m, t, e = cfg["model"], cfg["training"], cfg["execution"]
    assert cfg["train"] == Path("t.npz") and cfg["test"] == Path("v.npz") and cfg["output_dir"] == Path("out")
    assert m.gridsize == 1 and t.nepochs == 7 and t.n_groups == 300 and t.batch_size == 8
    assert t.learning_rate == 5e-4 and t.scheduler == "exponential" and t.early_stop_patience == 4
    assert e.accelerator == "cpu" and e.deterministic is False and e.num_workers == 2
    assert e.accumulate_grad_batches == 2 and e.enable_progress_bar is False and e.enable_checkpointing is False
    assert e.checkpoint_save_top_k == 3 and e.logger == "none"


def test_train_defaults_follow_the_reference() -> None:
    cfg = ttrain.build_args(BASE)
    assert cfg["model"].gridsize == 2 and cfg["training"].nepochs == 100 and cfg["training"].batch_size == 16
    assert cfg["execution"].deterministic is True and cfg["execution"].enable_checkpointing is True
    assert cfg["execution"].logger == "csv" and cfg["test"] is None


@pytest.mark.parametrize(("name", "core"), [("Default", "constant"), ("Exponential", "exponential"),
                                            ("ReduceLROnPlateau", "plateau"), ("Adaptive", "plateau"),
                                            ("CosineAnnealing", "cosine")])
def test_scheduler_names(name: str, core: str) -> None:
    assert ttrain.build_args([*BASE, "--scheduler", name])["training"].scheduler == core


@pytest.mark.parametrize("text", ["False", "false", "0", "no"])
def test_false_strings_are_false(text: str) -> None:
    cfg = ttrain.build_args([*BASE, "--deterministic", text, "--enable-checkpointing", text])
    assert cfg["execution"].deterministic is False and cfg["execution"].enable_checkpointing is False


def test_true_strings_and_bare_flags() -> None:
    cfg = ttrain.build_args([*BASE, "--deterministic", "True", "--enable-checkpointing"])
    assert cfg["execution"].deterministic is True and cfg["execution"].enable_checkpointing is True


@pytest.mark.parametrize("extra", [["--deterministic", "maybe"], ["--scheduler", "MultiStage"],
                                   ["--accelerator", "tpu"], ["--checkpoint-mode", "max"],
                                   ["--checkpoint-monitor", "psnr"], ["--max_epochs", "0"],
                                   ["--learning-rate", "abc"], ["--logger", "wandb"], ["--bogus"]])
def test_bad_values_raise_config_error(extra: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        ttrain.build_args([*BASE, *extra])
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)


def test_missing_required_flag_is_an_error() -> None:
    with pytest.raises(ConfigError, match="output_dir"):
        ttrain.build_args(["--train_data_file", "t.npz"])


def test_deprecated_n_images_device_and_disable_mlflow_warn() -> None:
    with pytest.warns(DeprecationWarning, match="n_images"):
        cfg = ttrain.build_args([*BASE, "--n_images", "64"])
    assert cfg["training"].n_groups == 64
    with pytest.warns(DeprecationWarning, match="--device"):
        cfg = ttrain.build_args([*BASE, "--device", "cpu"])
    assert cfg["execution"].accelerator == "cpu"
    with pytest.warns(DeprecationWarning, match="--device"):  # an explicit accelerator wins
        assert ttrain.build_args([*BASE, "--device", "cuda", "--accelerator", "cpu"])["execution"].accelerator == "cpu"
    with pytest.warns(DeprecationWarning, match="disable_mlflow"):
        cfg = ttrain.build_args([*BASE, "--disable_mlflow"])
    assert cfg["execution"].logger == "none" and cfg["execution"].enable_progress_bar is False
    with pytest.raises(ConfigError, match="contradicts"), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ttrain.build_args([*BASE, "--n_images", "64", "--n_groups", "32"])


def test_main_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert ttrain.main([*BASE, "--scheduler", "MultiStage"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "MultiStage" in err
    missing = tmp_path / "nope.npz"
    assert ttrain.main(["--train_data_file", str(missing), "--output_dir", str(tmp_path / "o")]) == 2
    assert str(missing) in capsys.readouterr().err
    assert tinf.main(["--model_path", str(tmp_path / "m"), "--test_data", str(missing),
                      "--output_dir", str(tmp_path / "r")]) == 2
    assert "not found" in capsys.readouterr().err
    assert ttrain.main(["--help"]) == 0


def test_missing_file_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        ttrain._run(["--train_data_file", str(tmp_path / "nope.npz"), "--output_dir", str(tmp_path / "o")])


def test_inference_flags() -> None:
    base = ["--model_path", "m", "--test_data", "s.npz", "--output_dir", "r"]
    cfg = tinf.build_args([*base, "--n_groups", "50", "--accelerator", "cpu", "--inference-batch-size", "8",
                           "--quiet"])
    assert cfg["n_groups"] == 50 and cfg["inference"].accelerator == "cpu" and cfg["inference"].batch_size == 8
    assert cfg["quiet"] is True and cfg["model_path"] == Path("m")
    with pytest.warns(DeprecationWarning):
        cfg = tinf.build_args([*base, "--n_images", "20", "--device", "cpu"])
    assert cfg["n_groups"] == 20 and cfg["inference"].accelerator == "cpu"
    with pytest.raises(ConfigError):
        tinf.build_args([*base, "--inference-batch-size", "0"])
