"""What keeps a training run from hurting itself or another: the output-folder lock, Ctrl-C as a clean stop,
the resume checkpoint checked before Lightning touches it, and a clear error when DDP processes never join.

* :func:`output_lock`: one run per output folder (:func:`ptychopinn.io.outputs.folder_lock`: ``DIR/.ptychopinn.lock``
  held with ``flock``, released by the kernel when the process dies, naming the holder for a second run's error).
* :func:`interrupt_as_exception` and :class:`StopOnInterrupt`: Ctrl-C (SIGINT) during ``fit`` stops training
  at the next safe point (the end of a batch or an epoch) by raising :class:`TrainingInterrupted`, which
  Lightning does not swallow (it turns a ``KeyboardInterrupt`` into ``sys.exit(1)``). Never in the middle of
  writing a checkpoint: an exception raised inside torch's writer comes out as an unrelated RuntimeError. A
  second Ctrl-C stops at once.
* :func:`check_resume_checkpoint`: reads the checkpoint with ``weights_only=True`` (never unpickles code) and
  compares its weights with the model about to be trained.
* :func:`rendezvous_error`: a one-line :class:`ConfigError` for a DDP process group that timed out.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback

from ptychopinn.config import ExecutionConfig
from ptychopinn.errors import ConfigError
from ptychopinn.io.outputs import LOCK_NAME, folder_lock

__all__ = ["LOCK_NAME", "StopOnInterrupt", "TrainingInterrupted", "check_resume_checkpoint",
           "interrupt_as_exception", "interrupt_requested", "output_lock", "rendezvous_error"]



class TrainingInterrupted(BaseException):
    """Ctrl-C during training (a BaseException like ``KeyboardInterrupt``, which Lightning would swallow)."""


def _is_rank_zero() -> bool:
    from lightning.pytorch.utilities import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


@contextlib.contextmanager
def output_lock(output_dir: Path) -> Iterator[None]:
    """Hold the lock of ``output_dir`` (:func:`ptychopinn.io.outputs.folder_lock`, the one lock of every command)
    for the duration of the block; :class:`ConfigError` naming the other run when it is held already. Only rank
    0 of a distributed run locks (the other ranks are its own processes)."""
    if not _is_rank_zero():
        yield
        return
    with folder_lock(output_dir, "ptychopinn training"):
        yield


class _Interrupt:
    requested = False  # set by the SIGINT handler, read at the safe points


_INTERRUPT = _Interrupt()


def interrupt_requested() -> bool:
    """True once Ctrl-C was pressed inside the current (or last) :func:`interrupt_as_exception` block."""
    return _INTERRUPT.requested


class StopOnInterrupt(Callback):
    """Raises :class:`TrainingInterrupted` at the end of a batch or epoch once Ctrl-C was pressed."""

    def _check(self) -> None:
        if _INTERRUPT.requested:
            raise TrainingInterrupted()

    def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
        self._check()

    def on_validation_batch_end(self, *args: Any, **kwargs: Any) -> None:
        self._check()

    def on_train_epoch_start(self, *args: Any, **kwargs: Any) -> None:
        self._check()


@contextlib.contextmanager
def interrupt_as_exception() -> Iterator[None]:
    """Inside the block the first SIGINT asks training to stop at the next safe point (:class:`StopOnInterrupt`
    raises :class:`TrainingInterrupted` there) and a second one raises it at once (main thread only; elsewhere
    signals cannot be handled and the block runs unchanged). The previous handler is restored afterwards."""
    _INTERRUPT.requested = False
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if _INTERRUPT.requested:
            raise TrainingInterrupted()
        _INTERRUPT.requested = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def check_resume_checkpoint(path: Path, expected: dict[str, torch.Tensor]) -> None:
    """Raise :class:`ConfigError` unless ``path`` is a checkpoint readable with ``weights_only=True`` whose
    ``state_dict`` fits ``expected`` (the state dict of the Lightning module about to be trained)."""
    from ptychopinn.models.persist import state_mismatch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling refusals, truncation, not a zip: all one message
        detail = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise ConfigError(f"cannot resume from {path}: it is not a checkpoint that loads safely "
                          f"(weights_only=True: {detail}); expected a checkpoint written by ptychopinn train; "
                          "remove it to train from scratch, or use another --output-dir") from None
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ConfigError(f"cannot resume from {path}: it holds no 'state_dict'; expected a checkpoint written "
                          "by ptychopinn train; remove it to train from scratch, or use another --output-dir")
    problem = state_mismatch(expected, state)
    if problem is not None:
        raise ConfigError(f"cannot resume from {path}: it was written for another architecture ({problem}); "
                          "resume with the model settings of that run (N, gridsize, n_filters_scale, generator, "
                          "...) or use another --output-dir")


def rendezvous_error(exc: BaseException, execution: ExecutionConfig) -> ConfigError:
    """The one-line error for a DDP process group whose processes did not all join in time."""
    devices = execution.devices
    world = f"{execution.num_nodes * devices} processes" if isinstance(devices, int) else "processes"
    master = f"{os.environ.get('MASTER_ADDR', '127.0.0.1')}:{os.environ.get('MASTER_PORT', '?')}"
    detail = " ".join(str(exc).split())[:160]
    return ConfigError(
        f"distributed training waited {execution.rendezvous_timeout:g} s (execution.rendezvous_timeout) for its "
        f"{world} (num_nodes={execution.num_nodes} x devices={devices}) to join at {master}: {detail}; start "
        "one process per node and device (srun, torchrun) or train with --num-nodes 1; raise "
        "rendezvous_timeout in the config file's execution section for a slow cluster")
