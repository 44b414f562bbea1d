"""The demo pipeline (``make demo``) on a shorter training run: it must produce a recognisable
reconstruction of the unseen test image."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_short_demo_reconstructs_unseen_image(tmp_path) -> None:
    from ptychopinn.workflows_demo import run_demo

    res = run_demo(tmp_path / "demo", epochs=4, seed=0, progress=False, log=lambda s: None)
    for p in (res.archive, res.reconstruction, res.amplitude_png, res.phase_png, res.metrics_json,
              res.comparison_png):
        assert p.is_file() and p.stat().st_size > 1000
    a, ph = res.metrics["amplitude"], res.metrics["phase"]
    # The full 30-epoch demo measures amplitude Pearson 0.78 and phase 0.46 on this CPU; after 4 epochs
    # the phase has only begun to form (0.16), so the floors check that the image is recognisable in
    # amplitude and that the phase is already positively correlated (an untrained model gives ~0).
    assert a["pearson"] > 0.5
    assert ph["pearson"] > 0.05
    assert "demo done" in res.summary()
