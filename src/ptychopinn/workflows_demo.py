"""The demo pipeline behind ``ptychopinn demo`` / ``make demo``: simulate -> train -> reconstruct ->
evaluate on built-in data (bundled scikit-image pictures), offline."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ptychopinn.config import (
    ExecutionConfig,
    InferenceConfig,
    ModelConfig,
    RefineConfig,
    SimulationConfig,
    TrainingConfig,
)
from ptychopinn.io.outputs import LOCK_NAME


@dataclass
class DemoResult:
    """Where the demo wrote its outputs, and the key numbers."""

    output_dir: Path
    archive: Path
    reconstruction: Path
    amplitude_png: Path
    phase_png: Path
    metrics_json: Path
    comparison_png: Path
    metrics: dict[str, Any] = field(repr=False)
    seconds: float = 0.0
    network_metrics: dict[str, Any] | None = field(repr=False, default=None)

    def summary(self) -> str:
        a, p = self.metrics["amplitude"], self.metrics["phase"]

        def f(v: Any) -> str:
            return "n/a" if v is None else f"{v:.3f}"

        net = ""
        if self.network_metrics is not None:
            na, np_ = self.network_metrics["amplitude"], self.network_metrics["phase"]
            net = (f" (network alone: amplitude SSIM {f(na.get('ssim'))}, phase SSIM {f(np_.get('ssim'))}; "
                   f"then {REFINE_ITERATIONS} refinement iterations)")
        return (f"demo done in {self.seconds:.0f} s. Test object (never seen in training): amplitude SSIM "
                f"{f(a.get('ssim'))}, correlation {f(a.get('pearson'))}; phase SSIM {f(p.get('ssim'))}, "
                f"correlation {f(p.get('pearson'))}{net}. Look at {self.comparison_png} (reconstruction vs truth), "
                f"{self.amplitude_png}, {self.phase_png}; numbers in {self.metrics_json}")


DEMO_OUTPUTS = (LOCK_NAME, "train.npz", "test.npz", "preview.png", "model/", "reconstruction/",
                "evaluation/")
"""What the demo writes into its folder (folders end in ``/``)."""

REFINE_ITERATIONS = 30
"""Refinement iterations after the network in the demo (about a second at N=32)."""


def demo_configs(epochs: int, seed: int) -> tuple[SimulationConfig, SimulationConfig, ModelConfig, TrainingConfig]:
    """The simulation, model and training settings of the demo (small enough for a CPU)."""
    # oversample=2: the data do not follow the reconstruction's pixel model, as real detectors do not
    train_sim = SimulationConfig(N=32, object_size=128, object_kind="image", image_name="camera",
                                 phase_image="chelsea", scan="raster", overlap=0.6, nphotons=1e6, seed=seed,
                                 oversample=2)
    test_sim = train_sim.replace(image_name="astronaut", phase_image="coins", seed=seed + 1)
    model = ModelConfig(N=32, gridsize=1, n_filters_scale=1)
    training = TrainingConfig(nepochs=epochs, batch_size=16, learning_rate=2e-3, scheduler="cosine",
                              warmup_epochs=1, seed=seed)
    return train_sim, test_sim, model, training


def run_demo(output_dir: str | os.PathLike[str], *, epochs: int = 30, seed: int = 0, progress: bool = True,
             log: Callable[[str], None] = print) -> DemoResult:
    """Run the whole pipeline and write everything under ``output_dir``; returns a :class:`DemoResult`."""
    from ptychopinn.io.outputs import check_outputs_apart, folder_lock, remove_stale_temporaries

    out = Path(output_dir)
    check_outputs_apart(out, DEMO_OUTPUTS, ())
    out.mkdir(parents=True, exist_ok=True)
    with folder_lock(out, "ptychopinn demo"):
        remove_stale_temporaries(out, DEMO_OUTPUTS)
        return _run_demo(out, epochs, seed, progress, log)


def _run_demo(out: Path, epochs: int, seed: int, progress: bool, log: Callable[[str], None]) -> DemoResult:
    from ptychopinn.io.npz import save_npz
    from ptychopinn.io.outputs import staged_outputs
    from ptychopinn.plots import save_scan_preview
    from ptychopinn.simulate import simulate_scan
    from ptychopinn.workflows import evaluate_reconstruction, reconstruct_scan, train_model

    t0 = time.perf_counter()
    train_sim, test_sim, model, training = demo_configs(epochs, seed)
    train_scan = simulate_scan(train_sim, progress=progress)
    test_scan = simulate_scan(test_sim, progress=progress)
    assert train_scan.obj is not None  # a simulated scan always holds its object
    with staged_outputs(out) as stage:
        save_npz(stage / "train.npz", train_scan)
        save_npz(stage / "test.npz", test_scan)
        save_scan_preview(train_scan.obj, train_scan.probe, train_scan.positions, train_scan.diffraction[:4],
                          stage / "preview.png")
    log(f"simulated {train_scan.n_points} training and {test_scan.n_points} test patterns "
        f"({train_sim.N}x{train_sim.N}, {train_sim.nphotons:.0e} photons each)")
    execution = ExecutionConfig(enable_progress_bar=progress, logger="csv")
    trained = train_model(train_scan, output_dir=out / "model", model=model, training=training,
                          execution=execution)
    log(f"trained {trained.epochs_completed} epochs in {trained.seconds:.0f} s -> {trained.archive}")
    rec = reconstruct_scan(trained.archive, test_scan, output_dir=out / "reconstruction",
                           inference=InferenceConfig(), progress=progress,
                           refine=RefineConfig(iterations=REFINE_ITERATIONS))
    log(f"reconstructed the unseen test scan in {rec.seconds:.1f} s (network, then {REFINE_ITERATIONS} "
        f"refinement iterations) -> {rec.npz}")
    network_metrics = evaluate_reconstruction(rec.npz.parent / "network_reconstruction.npz", out / "test.npz",
                                              output_dir=out / "evaluation" / "network", remove_ramp=True)
    metrics = evaluate_reconstruction(rec.npz, out / "test.npz", output_dir=out / "evaluation", remove_ramp=True)
    ev = out / "evaluation"
    return DemoResult(output_dir=out, archive=trained.archive, reconstruction=rec.npz,
                      amplitude_png=rec.amplitude_png, phase_png=rec.phase_png,
                      metrics_json=ev / "metrics.json", comparison_png=ev / "comparison.png",
                      metrics=metrics, seconds=time.perf_counter() - t0, network_metrics=network_metrics)
