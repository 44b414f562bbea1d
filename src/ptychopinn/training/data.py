"""Torch datasets and the Lightning data module for training on grouped scans.

A training sample is one *group* (see :mod:`ptychopinn.data.grouping`): C = gridsize**2 diffraction
patterns, their relative offsets and, for supervised training, their true object patches.

Batches are gathered in ONE numpy fancy-indexing call per batch (:meth:`GroupedDataset.__getitems__`,
which ``torch.utils.data.DataLoader`` calls with the whole list of batch indices), so there is no Python
work per sample and a memory-mapped diffraction stack is read only where a batch needs it: the full stack
is never copied into memory.

Normalisation (reference section 1.3): the network sees ``X = a * A`` with the input scale
``a = sqrt((N/2)**2 / mean_pattern_energy)`` computed from the patterns of the TRAINING groups. A separate
validation scan is normalised with ITS OWN ``a``, exactly as inference normalises a new scan, so the
validation loss measures what inference will see. Groups held out of the training scan share its ``a``
(they come from the same measurement). The photon scale ``s = sqrt(nphotons) / (N/2)`` feeds only the
likelihood.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ptychopinn.config import ExecutionConfig, ModelConfig, TrainingConfig
from ptychopinn.data.grouping import Groups, effective_neighbor_count, group_positions
from ptychopinn.data.normalize import input_scale as compute_input_scale
from ptychopinn.data.normalize import intensity_scale as compute_intensity_scale
from ptychopinn.data.normalize import mean_pattern_energy
from ptychopinn.data.scan import ScanData
from ptychopinn.errors import ConfigError, DataFormatError, describe_array
from ptychopinn.runtime import uses_cuda

__all__ = ["GroupedDataset", "PtychoDataModule", "check_scans_fit_model", "passthrough_collate"]

Batch = dict[str, torch.Tensor]


def _memmap_spec(arr: np.ndarray) -> tuple[str, int, str] | None:
    """(filename, byte offset, mode) when ``arr`` is a C-contiguous view of a whole file-backed memmap run.

    ``np.asarray(memmap)`` drops the memmap type but keeps it as ``.base``; walking the base chain finds the
    file so that pickling (DataLoader workers under 'spawn', DDP spawn) re-opens it instead of serialising
    gigabytes of data.
    """
    base: Any = arr
    while base is not None and not isinstance(base, np.memmap):
        base = getattr(base, "base", None)
    if base is None or getattr(base, "filename", None) is None or not arr.flags.c_contiguous:
        return None
    start = arr.__array_interface__["data"][0] - base.__array_interface__["data"][0]
    mode = "r" if base.mode in ("r", "c") else "r+"
    return str(base.filename), int(base.offset) + int(start), mode


class GroupedDataset(Dataset[Batch]):
    """Groups of normalised diffraction amplitudes (and optional true patches) for training.

    Args:
        diffraction: ``[M, N, N]`` float amplitude sqrt(counts); a numpy array or ``np.memmap`` (never
            copied whole: each batch reads only its members).
        groups: :class:`Groups` with ``indices`` ``[B, C]`` into ``diffraction`` and relative offsets
            ``[B, C, 2]`` (x, y) px.
        input_scale: the factor ``a`` (dimensionless) that multiplies the raw amplitudes.
        patches: optional ``[M, N, N]`` complex ground-truth object patches (for supervised losses).
        weights: optional ``[N, N]`` float32 detector-pixel weights (1 = measured, 0 = masked,
            :meth:`ScanData.pixel_weights`): masked pixels of ``x`` are 0 and batches carry ``'weights'``
            so the loss leaves them out.

    Items are dicts of tensors: ``'x'`` float32 ``a * A`` (``[C, N, N]`` per sample, ``[B, C, N, N]`` per
    batch), ``'offsets'`` float32 ``[C, 2]`` / ``[B, C, 2]`` relative offsets in px, and ``'y'`` complex64
    ``[C, N, N]`` / ``[B, C, N, N]`` only when ``patches`` is given, and ``'weights'`` float32 ``[N, N]``
    (the same for every item) only when ``weights`` is given.
    """

    def __init__(self, diffraction: np.ndarray, groups: Groups, input_scale: float,
                 patches: np.ndarray | None = None, weights: np.ndarray | None = None) -> None:
        if not isinstance(diffraction, np.ndarray) or diffraction.ndim != 3:
            raise DataFormatError(f"diffraction: expected an [M, N, N] numpy array, found "
                                  f"{describe_array(diffraction)}; pass ScanData.diffraction")
        if not isinstance(groups, Groups):
            raise DataFormatError(f"groups: expected a Groups instance, found {type(groups).__name__}; "
                                  "build it with ptychopinn.data.grouping.group_positions")
        m = diffraction.shape[0]
        if groups.indices.size and (groups.indices.min() < 0 or groups.indices.max() >= m):
            raise DataFormatError(f"groups.indices: expected values in [0, {m - 1}], found range "
                                  f"[{groups.indices.min()}, {groups.indices.max()}]; group the positions of "
                                  "this same scan")
        if not (math.isfinite(input_scale) and input_scale > 0):
            raise ConfigError(f"input_scale: expected a finite number > 0, found {input_scale!r}; "
                              "compute it with ptychopinn.data.normalize.input_scale")
        if patches is not None and (patches.shape != diffraction.shape or not np.iscomplexobj(patches)):
            raise DataFormatError(f"patches: expected complex with shape {diffraction.shape}, found "
                                  f"{describe_array(patches)}; pass ScanData.patches of the same scan")
        self.diffraction = diffraction
        self.groups = groups
        self.input_scale = float(input_scale)
        self.patches = patches
        n = diffraction.shape[-1]
        if weights is not None and np.shape(weights) != (n, n):
            raise DataFormatError(f"weights: expected an [{n}, {n}] detector mask, found {describe_array(weights)}; "
                                  "pass ScanData.pixel_weights() of the same scan")
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float32)

    def __len__(self) -> int:
        return int(self.groups.indices.shape[0])

    def __getitems__(self, indices: list[int]) -> Batch:
        """The batch of groups ``indices`` (list of B ints) as ``{'x', 'offsets'[, 'y']}`` tensors."""
        sel = np.asarray(indices, dtype=np.int64)
        members = self.groups.indices[sel]  # [B, C]
        b, c = members.shape
        n = self.diffraction.shape[-1]
        flat = members.reshape(-1)
        # One gather for the whole batch; for a memmap this reads just these B*C patterns from disk.
        x = np.asarray(self.diffraction[flat], dtype=np.float32).reshape(b, c, n, n)
        x *= np.float32(self.input_scale)
        if self.weights is not None:
            x *= self.weights
        batch: Batch = {
            "x": torch.from_numpy(x),
            "offsets": torch.from_numpy(self.groups.relative_offsets[sel].astype(np.float32)),
        }
        if self.patches is not None:
            y = np.asarray(self.patches[flat], dtype=np.complex64).reshape(b, c, n, n)
            batch["y"] = torch.from_numpy(y)
        if self.weights is not None:
            batch["weights"] = torch.from_numpy(self.weights)
        return batch

    def __getitem__(self, index: int) -> Batch:
        """One group: ``'x'`` ``[C, N, N]``, ``'offsets'`` ``[C, 2]`` and optionally ``'y'``."""
        i = int(index)
        if not -len(self) <= i < len(self):
            raise IndexError(f"group index {index} out of range for {len(self)} groups")
        batch = self.__getitems__([i % len(self)])
        return {k: v if k == "weights" else v[0] for k, v in batch.items()}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for name in ("diffraction", "patches"):
            arr = state[name]
            spec = None if arr is None else _memmap_spec(arr)
            if spec is not None:  # re-open the file in the worker instead of pickling its contents
                state[name] = ("__memmap__", spec, arr.dtype.str, arr.shape)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name in ("diffraction", "patches"):
            v = state.get(name)
            if isinstance(v, tuple) and v and v[0] == "__memmap__":
                (filename, offset, mode), dtype, shape = v[1], v[2], v[3]
                state[name] = np.memmap(filename, dtype=np.dtype(dtype), mode=mode, offset=offset,
                                        shape=tuple(shape))
        self.__dict__.update(state)


def passthrough_collate(data: Batch | list[Batch]) -> Batch:
    """Collate function for :class:`GroupedDataset`.

    A dict (already batched by ``__getitems__``) is returned unchanged; a list of per-sample dicts (from a
    dataset wrapper without ``__getitems__``) is stacked along a new batch axis.
    """
    if isinstance(data, dict):
        return data
    if not data:
        raise DataFormatError("collate: expected at least one sample, found an empty batch; "
                              "check the sampler and batch_size")
    # the detector weights are one [N, N] map for the whole batch, not a per-sample array
    return {k: data[0][k] if k == "weights" else torch.stack([d[k] for d in data]) for k in data[0]}


def check_scans_fit_model(model: ModelConfig, **scans: ScanData | None) -> None:
    """The one check that training scans suit the model config: patterns of ``model.N`` pixels, and
    ground-truth patches for a supervised model. ``scans``: role name (used in messages) -> scan or None.

    Raises:
        ConfigError: naming the scan, what was expected and how to fix it.
    """
    for name, scan in scans.items():
        if scan is None:
            continue
        if scan.N != model.N:
            raise ConfigError(f"model.N is {model.N} but the {name} patterns are {scan.N}x{scan.N}; "
                              f"set N to {scan.N} in the model config")
        if model.model_type == "supervised" and scan.patches is None:
            raise ConfigError(f"model_type 'supervised' needs ground-truth patches (NPZ key 'Y') but the "
                              f"{name} scan has none; use model_type 'pinn' or a scan with patches")


class PtychoDataModule(L.LightningDataModule):
    """Grouped training (and validation) data with the scales the model needs.

    Everything is computed on construction (grouping, input scale, photon scale) because the model needs
    ``intensity_scale`` before it is built.

    Args:
        train: the training scan (``diffraction`` ``[M, N, N]`` float32 amplitude, positions ``[M, 2]`` px).
        model: model configuration (``gridsize`` sets C = gridsize**2 patterns per group).
        training: batch size, grouping (``n_groups``, ``n_subsample``, ``subsample_seed``,
            ``neighbor_count``, ``sequential_sampling``, ``enable_oversampling``), ``nphotons``,
            ``val_fraction`` and ``seed`` (shuffling order).
        execution: ``num_workers`` for the loaders (and the accelerator, to decide on pinned memory).
        val: optional validation scan, grouped with all its points and normalised with its own ``a``.
            Without it, ``val_fraction`` of the training groups are held out (seeded by
            ``subsample_seed``; for gridsize > 1 they can share patterns with training groups).

    Attributes:
        input_scale: ``a`` of the training patterns (dimensionless). val_input_scale: ``a`` of the
            validation data (equal to ``input_scale`` for a held-out split), or None.
        nphotons: mean total counts per pattern used by the likelihood; nphotons_source: ``'config'``
            (``training.nphotons``) or ``'measured'`` (mean ``sum A**2`` of the training patterns).
        intensity_scale: ``s = sqrt(nphotons) / (N/2)``.
        n_train_groups, n_val_groups: dataset sizes (groups).
    """

    def __init__(self, train: ScanData, model: ModelConfig, training: TrainingConfig,
                 execution: ExecutionConfig | None = None, val: ScanData | None = None) -> None:
        super().__init__()
        execution = execution if execution is not None else ExecutionConfig()
        self.model_config, self.training_config, self.execution_config = model, training, execution
        supervised = model.model_type == "supervised"
        check_scans_fit_model(model, training=train, validation=val)
        k = effective_neighbor_count(training.neighbor_count, model.gridsize)
        groups = group_positions(
            train.positions, model.gridsize, n_groups=training.n_groups, neighbor_count=k,
            seed=training.subsample_seed, sequential=training.sequential_sampling,
            n_subsample=training.n_subsample, enable_oversampling=training.enable_oversampling,
        )
        train_patches = train.patches if supervised else None
        if val is None:
            train_groups, val_groups = self._split(groups, training.val_fraction, training.subsample_seed)
        else:
            train_groups, val_groups = groups, None

        train_w = train.pixel_weights()
        self.input_scale = compute_input_scale(train.diffraction, train_groups.indices, train_w)
        if training.nphotons is not None:
            self.nphotons, self.nphotons_source = float(training.nphotons), "config"
        else:
            # For detector counts (A = sqrt(counts)) this is the real mean dose, making s = 1/a exactly.
            self.nphotons = mean_pattern_energy(train.diffraction, train_groups.indices, train_w)
            self.nphotons_source = "measured"
        self.intensity_scale = compute_intensity_scale(model.N, self.nphotons)
        self.train_dataset = GroupedDataset(train.diffraction, train_groups, self.input_scale, train_patches, train_w)

        self.val_dataset: GroupedDataset | None = None
        self.val_input_scale: float | None = None
        if val is not None:
            vgroups = group_positions(val.positions, model.gridsize, neighbor_count=k,
                                      seed=training.subsample_seed)
            val_w = val.pixel_weights()
            self.val_input_scale = compute_input_scale(val.diffraction, vgroups.indices, val_w)
            self.val_dataset = GroupedDataset(val.diffraction, vgroups, self.val_input_scale,
                                              val.patches if supervised else None, val_w)
        elif val_groups is not None:
            self.val_input_scale = self.input_scale
            self.val_dataset = GroupedDataset(train.diffraction, val_groups, self.input_scale, train_patches, train_w)

    @staticmethod
    def _split(groups: Groups, fraction: float, seed: int) -> tuple[Groups, Groups | None]:
        """Hold out ``round(fraction * B)`` groups (at least 1 when fraction > 0 and B >= 2), seeded."""
        b = groups.n_groups
        n_val = int(round(fraction * b))
        if fraction > 0 and b >= 2:
            n_val = min(max(n_val, 1), b - 1)
        else:
            n_val = 0
        if n_val == 0:
            return groups, None
        perm = np.random.default_rng(seed).permutation(b)
        # Sorted subsets keep the groups' spatial order (deterministic, cache-friendly reads of memmaps).
        return groups.subset(np.sort(perm[n_val:])), groups.subset(np.sort(perm[:n_val]))

    @property
    def has_val(self) -> bool:
        """True when there is a validation set."""
        return self.val_dataset is not None

    @property
    def n_train_groups(self) -> int:
        return len(self.train_dataset)

    @property
    def n_val_groups(self) -> int:
        return 0 if self.val_dataset is None else len(self.val_dataset)

    def _loader(self, dataset: GroupedDataset, shuffle: bool) -> DataLoader[Batch]:
        workers = self.execution_config.num_workers
        gen = torch.Generator()
        gen.manual_seed(self.training_config.seed)
        pin = uses_cuda(self.execution_config.accelerator) and torch.cuda.is_available()
        # A standard sampler + batch_size (no custom batch sampler) so Lightning can swap in a
        # DistributedSampler under DDP; batching itself happens in the dataset's __getitems__.
        trainer = getattr(self, "trainer", None)
        world = int(getattr(trainer, "world_size", 1) or 1) if trainer is not None else 1
        if world > 1 and not shuffle:
            # Lightning always builds a SHUFFLING DistributedSampler for the training loader; an explicit
            # non-shuffling one keeps `sequential_sampling` (rank r gets groups r, r+W, r+2W, ...).
            rank = int(getattr(trainer, "global_rank", 0))
            sampler: DistributedSampler[int] = DistributedSampler(dataset, num_replicas=world, rank=rank,
                                                                  shuffle=False)
            return DataLoader(
                dataset, batch_size=self.training_config.batch_size, sampler=sampler,
                num_workers=workers, persistent_workers=workers > 0, collate_fn=passthrough_collate,
                pin_memory=pin,
            )
        return DataLoader(
            dataset, batch_size=self.training_config.batch_size, shuffle=shuffle, generator=gen,
            num_workers=workers, persistent_workers=workers > 0, collate_fn=passthrough_collate,
            pin_memory=pin,
        )

    def train_dataloader(self) -> DataLoader[Batch]:
        """Shuffled (seeded by ``training.seed``) unless ``sequential_sampling``."""
        return self._loader(self.train_dataset, shuffle=not self.training_config.sequential_sampling)

    def val_dataloader(self) -> DataLoader[Batch] | list[Any]:
        """In-order loader over the validation groups; an empty list when there is no validation set."""
        if self.val_dataset is None:
            return []
        return self._loader(self.val_dataset, shuffle=False)
