"""Generators, the registry and the PINN module (generator + physics)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from helpers import poisson_before_and_after_steps
from ptychopinn.config import ModelConfig, TrainingConfig
from ptychopinn.errors import ConfigError, DataFormatError
from ptychopinn.models import (
    CNNGenerator,
    PtychoPINN,
    available_generators,
    build_generator,
    count_parameters,
    forward_flops,
    register_generator,
)
from ptychopinn.models import registry as registry_module
from ptychopinn.models.cnn import decoder_widths, encoder_depth, encoder_widths
from ptychopinn.physics.forward import ForwardModel
from ptychopinn.training.losses import compute_losses

S0 = 31.25  # sqrt(1e6) / 32: the intensity scale of N=64 data at 1e6 photons


def make_probe(n: int) -> torch.Tensor:
    """Smooth disk-like complex probe ``[n, n]`` complex64 with a phase curvature."""
    ax = torch.arange(n, dtype=torch.float32) - n // 2
    rr = ax[:, None] ** 2 + ax[None, :] ** 2
    amp = torch.exp(-rr / (2 * (n / 8) ** 2))
    return torch.polar(amp, 0.01 * rr)


def make_model(n: int = 32, gridsize: int = 1, seed: int = 0, **kw: object) -> PtychoPINN:
    torch.manual_seed(seed)
    kw.setdefault("generator", "cnn")  # these tests check the reference architecture ('unet' has test_unet.py)
    cfg = ModelConfig(N=n, gridsize=gridsize, n_filters_scale=kw.pop("n_filters_scale", 1), **kw)
    return PtychoPINN(cfg, make_probe(n), S0)


def make_batch(model: PtychoPINN, b: int = 2, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Physically consistent normalised amplitudes from a random object, and relative offsets."""
    g = torch.Generator().manual_seed(seed)
    c, n = model.channels, model.N
    obj = torch.polar(0.3 + 0.4 * torch.rand(b, c, n, n, generator=g), torch.rand(b, c, n, n, generator=g) - 0.5)
    with torch.no_grad():
        x = ForwardModel(model.physics.probe.detach().clone(), probe_scale=model.config.probe_scale)(obj)
    offsets = (torch.rand(b, c, 2, generator=g) - 0.5) * 6.0 if c > 1 else torch.zeros(b, c, 2)
    return x, offsets


# ----------------------------------------------------------------------------------------- architecture


@pytest.mark.parametrize(("n", "depth"), [(32, 2), (40, 2), (48, 2), (64, 3), (72, 3), (96, 3), (128, 4),
                                          (200, 3), (256, 5)])
def test_encoder_depth_table(n: int, depth: int) -> None:
    assert encoder_depth(n) == depth


def test_depth_valid_for_every_allowed_n() -> None:
    for n in range(32, 257, 8):
        depth = encoder_depth(n)
        assert depth >= 2 and n % 2 ** depth == 0, n
        assert encoder_widths(n, 2)[-1] == 256 and decoder_widths(n, 2)[-1] == 64


def test_filter_ladders_follow_reference_table() -> None:
    assert encoder_widths(64, 2) == [64, 128, 256] and decoder_widths(64, 2) == [128, 64]
    assert encoder_widths(128, 1) == [16, 32, 64, 128] and decoder_widths(128, 1) == [128, 64, 32]
    assert encoder_widths(256, 1) == [8, 16, 32, 64, 128] and decoder_widths(256, 1) == [256, 128, 64, 32]
    assert encoder_widths(32, 1) == [64, 128] and decoder_widths(32, 1) == [32]


@pytest.mark.parametrize("gridsize", [1, 2])
@pytest.mark.parametrize("n", [32, 40, 48, 64, 128])
def test_output_shapes_and_dtypes(n: int, gridsize: int) -> None:
    model = make_model(n, gridsize)
    x, off = make_batch(model)
    with torch.no_grad():
        obj, amp = model(x, off)
    c = gridsize * gridsize
    assert obj.shape == (2, c, n, n) and obj.dtype == torch.complex64
    assert amp.shape == (2, c, n, n) and amp.dtype == torch.float32
    assert torch.isfinite(amp).all()


@pytest.mark.parametrize("activation", ["sigmoid", "swish", "softplus", "relu"])
def test_amplitude_activations_ranges(activation: str) -> None:
    model = make_model(32, amp_activation=activation)
    x, off = make_batch(model, b=3)
    with torch.no_grad():
        obj = model.predict_patches(x * 5.0, off)  # larger inputs reach the tails of the activations
    assert (obj.abs() >= 0).all() and torch.isfinite(obj).all()
    phase = torch.angle(obj)
    assert (phase > -math.pi).all() and (phase <= math.pi).all()
    gen_amp = model.generator.head_amp(model.generator.decoder_amp(model.generator.encoder(x)))
    assert (gen_amp >= 0).all()


def test_pad_object_without_probe_big_confines_support_to_centre() -> None:
    model = make_model(32, probe_big=False)
    x, off = make_batch(model)
    with torch.no_grad():
        obj = model.predict_patches(x, off)
    border = torch.ones(32, 32, dtype=torch.bool)
    border[8:24, 8:24] = False
    assert (obj[..., border] == 0).all()
    assert (obj[..., ~border].abs() > 0).all()


@pytest.mark.parametrize(("pad_object", "probe_big"), [(True, True), (False, False)])
def test_border_is_filled_when_allowed(pad_object: bool, probe_big: bool) -> None:
    model = make_model(32, pad_object=pad_object, probe_big=probe_big)
    x, off = make_batch(model)
    with torch.no_grad():
        obj = model.predict_patches(x, off)
    assert (obj[..., :4, :].abs() > 0).all()


def test_parameter_count_n64_s2_c1() -> None:
    gen = build_generator("cnn", ModelConfig(N=64, gridsize=1, n_filters_scale=2))

    def conv(cin: int, cout: int, k: int = 3) -> int:
        return k * k * cin * cout + cout

    enc = conv(1, 64) + conv(64, 64) + conv(64, 128) + conv(128, 128) + conv(128, 256) + conv(256, 256)
    dec = conv(256, 128) + conv(128, 128) + conv(128, 64) + conv(64, 64)
    head = conv(64, 1) + conv(64, 32) + conv(32, 32) + conv(32, 1)
    expected = enc + 2 * (dec + head)
    print(f"\ncnn parameters at N=64, s=2, C=1: {count_parameters(gen)}")
    assert count_parameters(gen) == expected == 2_308_100


def test_cbam_adds_attention_and_still_trains() -> None:
    plain = make_model(32)
    model = make_model(32, cbam_encoder=True)
    assert count_parameters(model.generator) > count_parameters(plain.generator)
    x, off = make_batch(model)
    loss = compute_losses(model, x, off, TrainingConfig())["loss"]
    loss.backward()
    cbam = model.generator.encoder.attention[0]
    assert cbam.spatial.weight.grad is not None and cbam.spatial.weight.grad.abs().sum() > 0


def test_cbam_starts_as_a_near_identity() -> None:
    """At initialisation CBAM passes features through (gates ~0.98): with Glorot-initialised gate layers
    (gates ~0.5) each block quartered the features, the N=64 bottleneck was ~50x smaller than without CBAM
    and the output almost independent of the input, which trapped training at a flat amplitude."""
    model = make_model(64, gridsize=2, cbam_encoder=True)
    x, off = make_batch(model, b=4)
    enc = model.generator.encoder
    with torch.no_grad():
        h = model.generator_input(x, off)
        for block, att in zip(enc.blocks, enc.attention, strict=True):
            h = block(h)
            ratio = float(att(h).norm() / h.norm())
            assert 0.9 < ratio <= 1.0, ratio
            h = torch.nn.functional.max_pool2d(att(h), 2)


@pytest.mark.parametrize("activation", ["sigmoid", "swish", "softplus", "relu"])
@pytest.mark.parametrize("probe_scale", [4.0, 10.0])
def test_amplitude_head_starts_at_a_transmitting_object(activation: str, probe_scale: float) -> None:
    """An untrained model predicts amplitude ~2/probe_scale (a fully transmitting object under the forward
    model's probe normalisation) whatever the activation; the default sigmoid at probe_scale 4 keeps the
    zero bias it always had."""
    model = make_model(32, amp_activation=activation, probe_scale=probe_scale)
    x, off = make_batch(model, b=3)
    with torch.no_grad():
        amp = model.predict_patches(x, off).abs()
    assert float(amp.mean()) == pytest.approx(2.0 / probe_scale, rel=0.05)
    if activation == "sigmoid" and probe_scale == 4.0:
        assert float(model.generator.head_amp.centre.bias.detach().abs().max()) == 0.0


def test_forward_flops_match_conv_shapes() -> None:
    gen = build_generator("cnn", ModelConfig(N=64, gridsize=2, n_filters_scale=1))
    expected = 0

    def hook(mod: nn.Module, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal expected
        assert isinstance(mod, nn.Conv2d)
        kh, kw = mod.kernel_size
        expected += 2 * kh * kw * mod.in_channels * mod.out_channels * out.shape[-2] * out.shape[-1]

    handles = [m.register_forward_hook(hook) for m in gen.modules() if isinstance(m, nn.Conv2d)]
    flops = forward_flops(gen, 64, 4)
    for h in handles:
        h.remove()
    assert flops == expected > 0
    model = PtychoPINN(ModelConfig(N=64, gridsize=2, n_filters_scale=1, generator="cnn"), make_probe(64), S0)
    model.generator.load_state_dict(gen.state_dict())
    assert forward_flops(model, 64, 4) >= flops


# ----------------------------------------------------------------------------------------------- physics


def test_model_amplitudes_equal_forward_model_of_patches() -> None:
    model = make_model(32, gridsize=2)
    x, off = make_batch(model)
    with torch.no_grad():
        obj, amp = model(x, off)
        ref = ForwardModel(make_probe(32), probe_scale=4.0)(obj)
    torch.testing.assert_close(amp, ref, rtol=1e-6, atol=1e-6)


def test_overlap_applied_only_with_object_big() -> None:
    for big in (True, False):
        model = make_model(32, gridsize=2, object_big=big)
        x, off = make_batch(model)
        with torch.no_grad():
            raw = model.generator(model.generator_input(x, off))
            obj = model.predict_patches(x, off)
        assert torch.equal(raw, obj) != big


def test_poisson_gradients_reach_every_generator_weight() -> None:
    model = make_model(32, gridsize=2)
    x, off = make_batch(model)
    losses = compute_losses(model, x, off, TrainingConfig())
    assert set(losses) == {"loss", "poisson"}
    losses["loss"].backward()
    for name, p in model.generator.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_loss_terms_follow_weights() -> None:
    model = make_model(32)
    x, off = make_batch(model)
    y = torch.polar(torch.full_like(x, 0.5), torch.zeros_like(x))
    tc = TrainingConfig(nll_weight=2.0, mae_weight=3.0, realspace_weight=1.0, realspace_mae_weight=0.5)
    with torch.no_grad():
        out = compute_losses(model, x, off, tc, y)
        no_y = compute_losses(model, x, off, tc)
    assert set(out) == {"loss", "poisson", "mae", "realspace"} and set(no_y) == {"loss", "poisson", "mae"}
    expected = 2.0 * out["poisson"] + 3.0 * out["mae"] + 0.5 * out["realspace"]
    torch.testing.assert_close(out["loss"], expected)
    with pytest.raises(ConfigError, match="no active term"):
        compute_losses(model, x, off, TrainingConfig(nll_weight=0.0, realspace_weight=1.0,
                                                    realspace_mae_weight=1.0))


def test_self_consistent_data_has_zero_poisson_loss() -> None:
    model = make_model(32)
    x, off = make_batch(model)
    with torch.no_grad():
        assert float(compute_losses(model, x, off, TrainingConfig())["poisson"]) > 1e-3
        # A constant generator returns the same patches for any input, so feeding its own
        # predicted amplitudes back as "measurements" must give a perfect fit.
        model.generator.forward = lambda inp: torch.polar(torch.full_like(inp, 0.5),  # type: ignore[method-assign]
                                                          torch.zeros_like(inp))
        _, amp = model(x, off)
        loss = compute_losses(model, amp, off, TrainingConfig())["poisson"]
    assert abs(float(loss)) < 1e-5


def test_supervised_mode_requires_ground_truth() -> None:
    model = make_model(32, model_type="supervised")
    x, off = make_batch(model)
    with pytest.raises(DataFormatError, match="supervised training needs ground-truth patches Y"):
        compute_losses(model, x, off, TrainingConfig())
    y = torch.polar(torch.full_like(x, 0.5), torch.zeros_like(x))
    out = compute_losses(model, x, off, TrainingConfig(), y)
    assert set(out) == {"loss", "realspace"}
    out["loss"].backward()
    assert model.generator.encoder.blocks[0].conv1.weight.grad.abs().sum() > 0
    with pytest.raises(DataFormatError, match="ground-truth patches Y"):
        compute_losses(model, x, off, TrainingConfig(), y[:, :, :16])


@pytest.mark.parametrize("trainable", [True, False])
def test_intensity_scale_trainability(trainable: bool) -> None:
    model = make_model(32, intensity_scale_trainable=trainable)
    assert float(model.intensity_scale.detach()) == pytest.approx(S0, rel=1e-6)
    names = {n for n, _ in model.named_parameters()}
    assert ("log_intensity_scale" in names) == trainable
    assert "log_intensity_scale" in model.state_dict() and "log_data_intensity_scale" in model.state_dict()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, off = make_batch(model)
    before = float(model.intensity_scale.detach())
    compute_losses(model, x, off, TrainingConfig())["loss"].backward()
    opt.step()
    after = float(model.intensity_scale.detach())
    assert (after != before) == trainable
    assert float(model.data_intensity_scale.detach()) == pytest.approx(S0, rel=1e-6)


def test_quick_training_reduces_poisson_loss() -> None:
    model = make_model(32, seed=3)
    x, off = make_batch(model, b=2, seed=4)
    start, end = poisson_before_and_after_steps(model, x, off, steps=30)
    assert end < start


# ----------------------------------------------------------------------------------- state and precision


def test_state_dict_round_trip_reproduces_outputs() -> None:
    model = make_model(32, gridsize=2, seed=0, intensity_scale_trainable=True)
    with torch.no_grad():
        model.log_intensity_scale.add_(0.1)  # a trained scale must survive the round trip
    x, off = make_batch(model)
    fresh = make_model(32, gridsize=2, seed=7, intensity_scale_trainable=True)
    with torch.no_grad():
        ref_obj, ref_amp = model(x, off)
        assert not torch.equal(fresh(x, off)[0], ref_obj)
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        obj, amp = fresh(x, off)
    assert torch.equal(obj, ref_obj) and torch.equal(amp, ref_amp)
    assert torch.equal(fresh.intensity_scale, model.intensity_scale)
    tensors_only = {k: v for k, v in fresh.state_dict().items() if isinstance(v, torch.Tensor)}
    assert len(tensors_only) == len(fresh.state_dict()) and "physics.probe" in tensors_only


def test_bf16_autocast_forward_on_cpu() -> None:
    model = make_model(32, gridsize=2)
    x, off = make_batch(model)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        obj, amp = model(x, off)
    assert obj.dtype == torch.complex64 and amp.dtype == torch.float32
    assert torch.isfinite(obj).all() and torch.isfinite(amp).all()


def test_numpy_probe_accepted() -> None:
    probe = make_probe(32).numpy().astype(np.complex128)
    model = PtychoPINN(ModelConfig(N=32, n_filters_scale=1), probe, S0)
    assert model.physics.probe.dtype == torch.complex64


# ---------------------------------------------------------------------------------------- bad input


def test_unknown_generator_lists_registered_names() -> None:
    with pytest.raises(ConfigError, match=r"\['cnn'") as info:
        PtychoPINN(ModelConfig(N=32, generator="unet9"), make_probe(32), S0)
    assert "unet9" in str(info.value) and "\n" not in str(info.value)
    assert "cnn" in available_generators()


def test_register_custom_generator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_module, "_GENERATORS", dict(registry_module._GENERATORS))

    class Flat(nn.Module):
        def __init__(self, config: ModelConfig) -> None:
            super().__init__()
            self.a = nn.Parameter(torch.tensor(0.5))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.polar(self.a * torch.ones_like(x), torch.zeros_like(x))

    register_generator("flat")(Flat)
    assert "flat" in available_generators()
    model = PtychoPINN(ModelConfig(N=32, generator="flat"), make_probe(32), S0)
    assert isinstance(model.generator, Flat)
    with pytest.raises(ValueError, match="already registered"):
        register_generator("cnn")(Flat)
    register_generator("cnn")(CNNGenerator)  # re-registering the same class is harmless


def test_bad_inputs_raise_one_line_errors() -> None:
    model = make_model(32, gridsize=2)
    x, off = make_batch(model)
    cases = [
        lambda: model(x[:, :1], off),
        lambda: model(x, off[:, :, :1]),
        lambda: PtychoPINN(ModelConfig(N=32), make_probe(64), S0),
        lambda: PtychoPINN(ModelConfig(N=32), make_probe(32), 0.0),
        lambda: PtychoPINN(ModelConfig(N=32), make_probe(32), float("nan")),
    ]
    for case in cases:
        with pytest.raises((DataFormatError, ConfigError)) as info:
            case()
        assert "\n" not in str(info.value) and "expected" in str(info.value)


# ----------------------------------------------------------------------------------- group geometry as input
@pytest.mark.parametrize("generator", ["unet", "cnn"])
def test_offset_channels_let_the_generator_see_the_group_geometry(generator: str) -> None:
    # The same four patterns at another arrangement must give other patches before the overlap step: the
    # generator reads the offsets. Without offset_channels it cannot (the control).
    seen = make_model(32, gridsize=2, generator=generator, offset_channels=True)
    blind = make_model(32, gridsize=2, generator=generator, offset_channels=False)
    assert seen.config.input_channels == 12 and blind.config.input_channels == 4
    x, off = make_batch(seen)
    moved = off.flip(-1) * 1.5
    with torch.no_grad():
        a, b = seen.generator(seen.generator_input(x, off)), seen.generator(seen.generator_input(x, moved))
        assert float((a - b).abs().max()) > 1e-4
        unaware = blind.generator(blind.generator_input(x, off))
        assert torch.equal(unaware, blind.generator(blind.generator_input(x, moved)))
    # gridsize 1 has no neighbours: the option changes nothing there
    assert ModelConfig(N=32, offset_channels=True).input_channels == 1


def test_offset_channels_model_trains_and_round_trips() -> None:
    model = make_model(32, gridsize=2, seed=0, offset_channels=True)
    x, off = make_batch(model)
    start, end = poisson_before_and_after_steps(model, x, off, steps=20)
    assert end < start
    fresh = make_model(32, gridsize=2, seed=5, offset_channels=True)
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh(x, off)[0], model(x, off)[0])

