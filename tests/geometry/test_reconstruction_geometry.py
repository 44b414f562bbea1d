"""Pixel geometry of every reconstruction path, with a perfect predictor: no half-pixel (or any) offset.

Each path is driven the way its users drive it, with the network replaced by a test double that returns the
TRUE object patches of the scan (cut exactly at the sub-pixel positions, see ``exact_scan``), so any
displacement of the result is the path's own geometry. A path is correct when the sub-pixel registration of
its output onto the truth finds less than 0.1 px in x and y, and when the flipped, transposed and
conjugated truths fit worse than the truth itself.

* native (``ptychopinn infer`` -> :func:`ptychopinn.workflows.reconstruct_scan`): a position is the object
  point under patch pixel ``N//2`` (the NPZ contract, upstream PtychoPINN's rule);
* ``ptycho`` as ptychodus 1.7.0's PtychoPINN plugin calls it (its own ``_subprocess.run_reconstruct``):
  positions are ptychodus object pixels (object centre at ``(W-1)/2``) and the object point at a position
  lies under the patch's geometric centre ``(N-1)/2`` (ptychodus's forward model); the canvas is the input
  object's grid;
* ``ptycho_torch`` as ptychodus 1.7.0's PtychoPINN-Torch plugin calls it: same positions and patch
  convention; ptychodus labels the canvas centre with its object's centre.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from exact_scan import decode_index, encode_index, jittered_raster, smooth_object, true_patches

from ptychopinn.config import ModelConfig
from ptychopinn.metrics import register_subpixel

N = 32
SIZE = 128


class TruthPredictor(torch.nn.Module):
    """Test double for the network (the ``PatchPredictor`` protocol): the true patch of every member, found
    from the scan index its stand-in diffraction pattern encodes."""

    def __init__(self, patches: np.ndarray, gridsize: int = 1) -> None:
        super().__init__()
        self.config = ModelConfig(N=N, gridsize=gridsize, n_filters_scale=1)
        self.register_buffer("patches", torch.from_numpy(patches))

    def predict_patches(self, x: torch.Tensor, relative_offsets: torch.Tensor) -> torch.Tensor:
        idx = decode_index(x)
        return self.patches[idx.reshape(-1)].reshape(*idx.shape, N, N)


def _scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Truth ``[128, 128]`` and a jittered (+-1 px) 12 x 12 raster whose bounding box is centred on the
    object centre ((W-1)/2, (H-1)/2), as in a ptychodus product built for the scan."""
    obj = smooth_object(SIZE, cutoff=0.25, seed=seed)
    pos = jittered_raster(0.0, 6.0, 12, jitter=1.0, seed=seed + 1)
    mid = 0.5 * (pos.min(axis=0) + pos.max(axis=0))
    return obj, pos + (SIZE - 1) / 2 - mid


def _check_geometry(canvas: np.ndarray, truth: np.ndarray, margin: int = 3) -> None:
    """Registration shift of ``canvas`` onto ``truth`` (same grid) over the covered box below 0.1 px on both
    axes; then, registered, the truth fits better than its flipped, transposed and conjugated versions."""
    covered = np.abs(canvas) > 0
    rows, cols = np.flatnonzero(covered.any(axis=1)), np.flatnonzero(covered.any(axis=0))
    box = (slice(rows[0] + margin, rows[-1] + 1 - margin), slice(cols[0] + margin, cols[-1] + 1 - margin))
    rec, t = canvas[box].astype(np.complex128), truth[box]
    assert covered[box].all(), "the scanned box must be covered"
    _, (dy, dx) = register_subpixel(rec, t, channel="complex")
    assert abs(dy) < 0.1 and abs(dx) < 0.1, f"displaced: registration shift (dy, dx) = ({dy:.3f}, {dx:.3f}) px"

    def pearson(a: np.ndarray, b: np.ndarray) -> float:
        a, b = a - a.mean(), b - b.mean()
        return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))

    def fit(a: np.ndarray, b: np.ndarray) -> float:  # mean Pearson of amplitude and (global-phase free) phase
        rot = np.exp(-1j * np.angle(np.sum(a * np.conj(b))))
        return 0.5 * (pearson(np.abs(a), np.abs(b)) + pearson(np.angle(a * rot), np.angle(b)))

    own = fit(rec, t)
    assert own > 0.99, own
    for name, alt in {"updown": truth[::-1], "leftright": truth[:, ::-1], "transpose": truth.T,
                      "conjugate": np.conj(truth), "point reflection": np.conj(truth[::-1, ::-1])}.items():
        assert fit(rec, alt[box]) < own - 0.2, name


# ------------------------------------------------------------------------------------------- native
@pytest.mark.parametrize("gridsize", [1, 2])
def test_native_infer_output_lies_on_the_object_grid(gridsize: int, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    import ptychopinn.models.persist as persist
    from ptychopinn.data.scan import ScanData
    from ptychopinn.workflows import load_reconstruction, reconstruct_scan

    obj, pos = _scene()
    model = TruthPredictor(true_patches(obj, pos, N), gridsize)  # patch pixel N//2 on the position
    monkeypatch.setattr(persist, "load_model", lambda path: SimpleNamespace(model=model, path=Path(path)))
    scan = ScanData(diffraction=encode_index(len(pos), N), positions=pos, probe=np.ones((N, N), np.complex64),
                    obj=obj.astype(np.complex64))
    reconstruct_scan(tmp_path / "wts.h5.zip", scan, output_dir=tmp_path)
    canvas, _, origin = load_reconstruction(tmp_path / "reconstruction.npz")
    assert origin == (0.0, 0.0) and canvas.shape == obj.shape
    _check_geometry(canvas, obj)


# -------------------------------------------------------------------------------- ptycho via ptychodus
class _Queue:
    def put(self, item: Any) -> None:
        self.item = item


def _product(obj: np.ndarray, pos: np.ndarray, tmp: Path) -> Any:
    from ptychodus.api.io import load_product

    from ptychopinn.io.product_h5 import save_product_h5

    # off-centre object on purpose: positions must still map to the same object pixels
    path = save_product_h5(tmp / "product.h5", obj.astype(np.complex64), pos, np.ones((N, N), np.complex64),
                           pixel_size_m=1e-8, center_m=(2.5e-7, -1.5e-7), metadata={"probe_energy_eV": 8000.0})
    return load_product(path)


@pytest.mark.parametrize("gridsize", [1, 2])
def test_ptycho_surface_as_ptychodus_calls_it(gridsize: int, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ptychodus")
    from ptychodus.api.reconstruct import ReconstructInput
    from ptychodus.model.ptychopinn import _subprocess as plugin
    from ptychodus.model.ptychopinn._payload import ReconstructPayload

    import ptycho.params
    import ptycho.workflows.components as components
    from ptycho.config.config import InferenceConfig
    from ptycho.config.config import ModelConfig as LegacyModelConfig
    from ptycho.workflows.inference_model import InferenceModel
    from ptychopinn.models.pinn import PtychoPINN

    obj, pos = _scene(seed=2)
    truth = TruthPredictor(true_patches(obj, pos, N, centre=(N - 1) / 2), gridsize)  # ptychodus's convention
    core = PtychoPINN(ModelConfig(N=N, gridsize=gridsize, n_filters_scale=1), np.ones((N, N), np.complex64), 1.0)
    monkeypatch.setattr(core, "predict_patches", truth.predict_patches)

    def load_bundle(model_dir: Any) -> tuple[InferenceModel, dict[str, Any]]:
        ptycho.params.cfg["intensity_scale"] = 1.0
        return InferenceModel(core, device="cpu"), {}

    monkeypatch.setattr(components, "load_inference_bundle", load_bundle)
    product = _product(obj, pos, tmp_path)
    payload = ReconstructPayload(
        inference_config=InferenceConfig(model=LegacyModelConfig(N=N, gridsize=gridsize)), model_bundle_dir=tmp_path,
        n_nearest_neighbors=7, n_samples=1,
        reconstruct_input=ReconstructInput(diffraction_patterns=encode_index(len(pos), N),
                                           bad_pixels=np.zeros((N, N), bool), product=product))
    queue = _Queue()
    plugin.run_reconstruct(payload, queue)
    out = pickle.loads(queue.item[1]).product.object_
    canvas = out.get_layer(0)
    assert canvas.shape == obj.shape  # on the input object's grid, labelled with its centre and pixel size
    assert (out.get_center().x_m, out.get_center().y_m) == (2.5e-7, -1.5e-7)
    _check_geometry(canvas, obj)


@pytest.mark.parametrize("gridsize", [1, 2])
def test_ptycho_workflow_stitching_uses_the_same_convention(gridsize: int) -> None:
    """``run_cdi_example(..., do_stitching=True)`` / ``reassemble_cdi_image`` (also behind
    ``ptycho_torch.workflows``) stitches like ``reassemble_position``."""
    from ptycho.raw_data import RawData
    from ptycho.workflows.components import reassemble_cdi_image

    obj, pos = _scene(seed=6)
    model = TruthPredictor(true_patches(obj, pos, N, centre=(N - 1) / 2), gridsize)
    raw = RawData.from_coords_without_pc(xcoords=pos[:, 0], ycoords=pos[:, 1], diff3d=encode_index(len(pos), N),
                                         probeGuess=np.ones((1, N, N), np.complex64),
                                         scan_index=np.zeros(len(pos), int), objectGuess=obj)
    canvas = reassemble_cdi_image(raw, model, M=20)
    assert canvas.shape == obj.shape
    _check_geometry(canvas, obj)


# -------------------------------------------------------------------------- ptycho_torch via ptychodus
@pytest.mark.parametrize("gridsize", [1, 2])
def test_ptycho_torch_surface_as_ptychodus_calls_it(gridsize: int, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ptychodus")
    pytest.importorskip("lightning")
    from ptychodus.api.reconstruct import ReconstructInput
    from ptychodus.model.ptychopinn_torch import _subprocess as plugin
    from ptychodus.model.ptychopinn_torch._payload import ReconstructPayload

    from ptycho_torch.api.base_api import ConfigManager, PtychoModel

    obj, pos = _scene(seed=4)
    truth = TruthPredictor(true_patches(obj, pos, N, centre=(N - 1) / 2), gridsize)
    data = {"N": N, "C": gridsize**2, "grid_size": (gridsize, gridsize), "K": 6}
    cm = ConfigManager(data_config=data, model_config={"mode": "Unsupervised"}, training_config={"device": "cpu"})
    pm = PtychoModel(model_config=cm.model_config, data_config=cm.data_config,
                     training_config=cm.training_config, inference_config=cm.inference_config)
    pm.model = torch.nn.Module()
    pm.model.model = truth
    monkeypatch.setattr(plugin, "_load_ptycho_model", lambda path: (pm, cm))
    payload = ReconstructPayload(model_path=tmp_path / "model.ckpt", model_training_mode="Unsupervised",
                                 reconstruct_input=ReconstructInput(
                                     diffraction_patterns=encode_index(len(pos), N) ** 2,  # counts: sqrt taken
                                     bad_pixels=np.zeros((N, N), bool), product=_product(obj, pos, tmp_path)))
    queue = _Queue()
    plugin.run_reconstruct(payload, queue)
    canvas = pickle.loads(queue.item[1]).product.object_.get_layer(0)
    h, w = canvas.shape
    # ptychodus's reading: canvas pixel (row, col) is object point ((H-1)/2 - (h-1)/2 + row, ...); sample the
    # truth exactly there (the canvas and object sides differ in parity: half-pixel sampling points)
    corner = np.array([(SIZE - 1) / 2 - (w - 1) / 2, (SIZE - 1) / 2 - (h - 1) / 2])
    on_canvas = true_patches(obj, corner[None], max(h, w), centre=0)[0][:h, :w]
    _check_geometry(canvas, on_canvas)
