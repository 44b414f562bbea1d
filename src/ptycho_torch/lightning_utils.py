"""Checkpoint lookup of the PtychoPINN-Torch surface."""

from __future__ import annotations

from pathlib import Path

__all__ = ["find_best_checkpoint"]


def find_best_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint to use from a training run directory, or None when it has none.

    Looks in ``run_dir/checkpoints`` for, in order: ``best-checkpoint.ckpt``; the best-by-validation file
    ``best-*.ckpt`` (newest when several); ``last.ckpt``; any ``*.ckpt`` (newest).
    """
    ckpt_dir = Path(run_dir) / "checkpoints"
    if not ckpt_dir.is_dir():
        return None
    named = ckpt_dir / "best-checkpoint.ckpt"
    if named.is_file():
        return named
    for pattern in ("best-*.ckpt", "last.ckpt", "*.ckpt"):
        found = sorted(ckpt_dir.glob(pattern), key=lambda p: (p.stat().st_mtime, p.name))
        if found:
            return found[-1]
    return None
