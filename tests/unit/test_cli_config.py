"""One schema for a training run: config files have RunConfig's sections, --print-config shows every
field resolved and can be fed back, flags override the file, and what train does not use is refused."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from ptychopinn.cli import main
from ptychopinn.config import RUN_SECTIONS, ExecutionConfig, ModelConfig, TrainingConfig


def _print_config(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main(["train", "--print-config", *args]) == 0
    return yaml.safe_load(capsys.readouterr().out)


def test_print_config_shows_every_field_and_round_trips(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    resolved = _print_config(capsys, "--epochs", "3", "--gridsize", "2")
    assert tuple(resolved) == RUN_SECTIONS
    for section, cls in zip(RUN_SECTIONS, (ModelConfig, TrainingConfig, ExecutionConfig), strict=True):
        assert set(resolved[section]) == {f.name for f in dataclasses.fields(cls)}
    assert resolved["training"]["nepochs"] == 3 and resolved["model"]["gridsize"] == 2
    saved = tmp_path / "run.yaml"
    saved.write_text(yaml.safe_dump(resolved))
    assert _print_config(capsys, "--config", str(saved)) == resolved
    # a flag overrides the file
    assert _print_config(capsys, "--config", str(saved), "--epochs", "7")["training"]["nepochs"] == 7


@pytest.mark.parametrize(("text", "fragment"), [
    ("inference:\n  batch_size: 8\n", "section 'inference' is not used by `ptychopinn train`"),
    ("modle:\n  N: 32\n", "unknown section(s)"),
    ("training:\n  nepoch: 3\n", "unknown key(s) ['nepoch']"),
    ("training:\n  output_dir: run\n", "unknown key(s) ['output_dir']"),
    ("model: [1, 2]\n", "section 'model' must be a mapping"),
])
def test_config_file_mistakes_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str,
                                                  fragment: str) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    assert main(["train", "--config", str(cfg), "--print-config"]) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and "\n" not in err


def test_train_without_data_says_what_is_missing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train"]) == 2
    assert "needs the training scan TRAIN.npz and --output-dir" in capsys.readouterr().err
