"""The proximal prior of refinement (ptychopinn.refine.prior): a prior equal to the truth pulls a low-dose
refinement toward it in both engines, whatever its global phase; weight 0 changes nothing; bad weights and
priors are refused with one clear line. These tests use the truth as the prior to test the mechanism only."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from helpers import astronaut_scan, ssim_on_scanned_region
from ptychopinn.config import RefineConfig
from ptychopinn.data.scan import ScanData
from ptychopinn.errors import ConfigError, DataFormatError
from ptychopinn.refine import create_reconstructor, refine_scan

ITERATIONS = 15


def _low_dose() -> ScanData:
    return astronaut_scan(nphotons=1e3)


def _blind(scan: ScanData) -> ScanData:
    return dataclasses.replace(scan, obj=None, patches=None)


def _refined_ssim(engine: str, weight: float, prior: np.ndarray | None) -> tuple[float, float]:
    scan = _low_dose()
    cfg = RefineConfig(engine=engine, iterations=ITERATIONS, tolerance=None, warmup=5, prior_weight=weight)
    res = refine_scan(_blind(scan), cfg, prior=prior, prior_origin=(0.0, 0.0))
    return ssim_on_scanned_region(res.obj, res.origin, scan)


@pytest.mark.parametrize("engine", ["cg", "rpie"])
def test_a_prior_equal_to_the_truth_pulls_toward_it_whatever_its_global_phase(engine: str) -> None:
    truth = _low_dose().obj
    amp0, ph0 = _refined_ssim(engine, 0.0, None)
    amp1, ph1 = _refined_ssim(engine, 3.0, truth)
    amp2, ph2 = _refined_ssim(engine, 3.0, truth * np.complex64(np.exp(1.3j)))
    assert amp1 > amp0 + 0.05 and ph1 > ph0 + 0.05, (amp0, ph0, amp1, ph1)
    # the prior's global phase is fitted to the object before every pull
    assert abs(amp2 - amp1) < 0.01 and abs(ph2 - ph1) < 0.01, (amp1, ph1, amp2, ph2)


def test_weight_zero_leaves_refinement_as_it_was() -> None:
    scan = _blind(_low_dose())
    cfg = RefineConfig(iterations=12, tolerance=None, warmup=5)
    plain = refine_scan(scan, cfg)
    prior = np.full((40, 40), 0.5 + 0.5j, np.complex64)
    ignored = refine_scan(scan, cfg.replace(prior_weight=0.0), prior=prior, prior_origin=(10.0, 10.0))
    np.testing.assert_array_equal(plain.obj, ignored.obj)
    assert [h["misfit"] for h in plain.history] == [h["misfit"] for h in ignored.history]


@pytest.mark.parametrize("weight", [-0.1, float("nan"), float("inf"), "strong", True])
def test_a_bad_prior_weight_is_refused(weight: object) -> None:
    with pytest.raises(ConfigError, match="prior_weight"):
        RefineConfig(prior_weight=weight)  # type: ignore[arg-type]


def test_a_prior_of_another_shape_than_the_start_is_refused_naming_both() -> None:
    scan = _blind(_low_dose())
    start = np.ones((96, 96), np.complex64)
    with pytest.raises(DataFormatError, match=r"\(96, 96\).*\(80, 96\)"):
        create_reconstructor(scan, RefineConfig(prior_weight=1.0), start=start, prior=start[:80])
    with pytest.raises(DataFormatError, match="prior: expected a 2-D"):
        create_reconstructor(scan, RefineConfig(prior_weight=1.0), prior=np.ones((2, 96, 96), np.complex64))


def test_a_weight_without_any_image_to_pull_toward_is_refused() -> None:
    with pytest.raises(ConfigError, match="prior_weight: 1.0 needs a prior image"):
        create_reconstructor(_blind(_low_dose()), RefineConfig(prior_weight=1.0))


def test_the_start_is_the_prior_when_none_is_given() -> None:
    scan = _low_dose()
    cfg = RefineConfig(engine="cg", iterations=ITERATIONS, tolerance=None, warmup=5, prior_weight=3.0)
    by_default = refine_scan(_blind(scan), cfg, start=scan.obj)
    explicit = refine_scan(_blind(scan), cfg, start=scan.obj, prior=scan.obj)
    np.testing.assert_array_equal(by_default.obj, explicit.obj)
