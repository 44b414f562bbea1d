"""The default generator ``'cnn'``: a convolutional encoder with two decoders (amplitude, phase).

Design (our implementation of the published PtychoPINN architecture):

* **Encoder**: ``L`` conv-pool blocks (conv3x3-ReLU-conv3x3-ReLU-maxpool2) with
  ``L = min(v2(N), floor(log2 N) - 3)`` (``v2`` = number of factors of 2 in N): N=32 -> 2,
  64 -> 3, 128 -> 4, 256 -> 5, and every multiple of 8 in 32..256 works (40 -> 2, 72 -> 3, 200 -> 3).
  Widths end at ``128 s`` and halve backwards (N=64: 32s, 64s, 128s; N=128: 16s ... 128s),
  with ``s = n_filters_scale``. Optional CBAM attention after each block (off by default: the
  reference found it causes flat-amplitude collapse at N=128; here its gates start near identity,
  see :class:`CBAM`).
* **Decoders** (one per output, no skip connections): ``L - 1`` conv-up blocks
  (conv3x3-ReLU-conv3x3-ReLU-nearest upsample x2) from the bottleneck back to ``N/2`` with widths
  ``... 64s, 32s``.
* **Heads** (per decoder), the "Nyquist" support idea: with ``pad_object`` the object lives in the
  central ``N/2 x N/2`` (path 1: conv3x3 to C channels at ``N/2``, activation, zero-padded by ``N/4``
  on every side) so its autocorrelation fits the ``N x N`` detector; with ``probe_big`` a second path
  (conv-up block to full resolution, conv3x3, activation) fills only the border, where the probe's
  side lobes illuminate. Without ``pad_object`` only the full-resolution path is used.
* **Activations**: amplitude from ``amp_activation`` (sigmoid, swish, softplus, relu; relu may give
  exactly 0), phase ``pi * tanh`` in ``(-pi, pi)``. Output ``O = a * exp(i phi)`` with ``a >= 0``.
* **Init**: Glorot/Xavier-uniform weights, zero biases (the reference found this trains more
  reliably than PyTorch's default Kaiming-uniform).

Differences from the reference, and why: the border path takes the decoder's features (not a
C-channel slice of them) and runs at half the decoder width, ``16 s``: it only represents the weakly
illuminated border and is the only part of the network at full resolution besides the first encoder
block (about a quarter fewer FLOPs than the reference's border path). The border path uses the
branch's own activation (the reference uses SiLU for both), so amplitude stays in the activation's
range and phase in ``(-pi, pi)``. 'swish' is SiLU shifted up by its minimum (0.278) so amplitudes
are never negative (a negative amplitude would be a hidden pi phase flip).

Cost: :func:`forward_flops` counts it (the README has the measured speed). Memory format: the default
contiguous (NCHW) layout is kept (channels-last was not faster on a CPU, README); callers may still convert
with ``model.to(memory_format=torch.channels_last)`` (e.g. on GPUs).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from ptychopinn.config import ModelConfig
from ptychopinn.models.registry import register_generator

# Minimum of SiLU(t) = t * sigmoid(t) (at t ~ -1.278); see _shifted_swish.
_SILU_MIN = -0.27846454276107380


def _shifted_swish(t: torch.Tensor) -> torch.Tensor:
    # Plain SiLU reaches -0.278: a negative amplitude is a hidden pi phase flip that puts the true
    # phase outside the bounded pi*tanh range. Shifting by the minimum keeps SiLU's shape and
    # smooth gradients while guaranteeing a >= 0.
    return F.silu(t) - _SILU_MIN


_AMP_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sigmoid": torch.sigmoid,
    "swish": _shifted_swish,
    "softplus": F.softplus,
    "relu": F.relu,
}


def glorot_init(module: nn.Module) -> None:
    """Glorot/Xavier-uniform weights and zero biases for every conv and linear layer of ``module``
    (the reference found this trains more reliably than PyTorch's default Kaiming-uniform)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def init_generator(module: nn.Module, amplitude_heads: list[nn.Conv2d | None], amp_bias: float) -> None:
    """Initialise a generator: :func:`glorot_init`, near-identity CBAM gates (:meth:`CBAM.reset_parameters`)
    and the amplitude heads' output biases at ``amp_bias`` (see :func:`inverse_amp_activation`)."""
    glorot_init(module)
    for m in module.modules():
        if isinstance(m, CBAM):
            m.reset_parameters()
    for conv in amplitude_heads:
        if conv is not None and conv.bias is not None:
            nn.init.constant_(conv.bias, amp_bias)


def inverse_amp_activation(name: str, value: float) -> float:
    """The pre-activation ``t`` at which amplitude activation ``name`` gives ``value`` (> 0).

    Values outside the activation's range are clipped into it first (sigmoid: to [0.02, 0.98]).
    Used to start the amplitude heads at the amplitude of a fully transmitting object."""
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"inverse_amp_activation: expected a finite value > 0, found {value!r}")
    if name == "sigmoid":
        v = min(max(v, 0.02), 0.98)
        return math.log(v / (1.0 - v))
    if name == "softplus":
        return math.log(math.expm1(v))
    if name == "relu":
        return v
    if name == "swish":  # SiLU(t) = v + _SILU_MIN on the increasing branch t > -1.2785: bisection
        target = v + _SILU_MIN
        lo, hi = -1.2784645, max(1.0, 2.0 * target + 2.0)
        for _ in range(100):
            mid = 0.5 * (lo + hi)
            if mid / (1.0 + math.exp(-mid)) < target:
                lo = mid
            else:
                hi = mid
        return 0.5 * (lo + hi)
    raise ValueError(f"inverse_amp_activation: unknown activation {name!r}; expected one of "
                     f"{sorted(_AMP_ACTIVATIONS)}")


def _phase_activation(t: torch.Tensor) -> torch.Tensor:
    return math.pi * torch.tanh(t)


def encoder_depth(N: int) -> int:
    """Number ``L`` of conv-pool blocks for patch size ``N``: ``min(v2(N), floor(log2 N) - 3)``."""
    v2 = (N & -N).bit_length() - 1
    return min(v2, int(math.floor(math.log2(N))) - 3)


def encoder_widths(N: int, scale: int) -> list[int]:
    """Output channels of the encoder blocks: ending at ``128*scale``, halving backwards."""
    depth = encoder_depth(N)
    return [128 * scale // 2 ** (depth - 1 - i) for i in range(depth)]


def decoder_widths(N: int, scale: int) -> list[int]:
    """Output channels of the ``L - 1`` decoder conv-up blocks, ending at ``32*scale``."""
    depth = encoder_depth(N)
    return [32 * scale * 2 ** (depth - 2 - i) for i in range(depth - 1)]


def _conv3x3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, padding=1)


class DoubleConv(nn.Module):
    """conv3x3-ReLU-conv3x3-ReLU: ``[B, cin, H, W]`` -> ``[B, cout, H, W]`` (same float dtype)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin, cout)
        self.conv2 = _conv3x3(cout, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In-place ReLU: conv outputs are not needed for the backward of ReLU (it uses its output).
        return F.relu(self.conv2(F.relu(self.conv1(x), inplace=True)), inplace=True)


# Initial logit of every CBAM gate: sigmoid(4) = 0.982, so a block with CBAM starts as a near-identity.
CBAM_GATE_BIAS = 4.0


class CBAM(nn.Module):
    """Convolutional block attention (channel then spatial), after Woo et al. 2018.

    Channel attention: avg- and max-pooled descriptors ``[B, C]`` through a shared MLP
    (C -> C/16 -> C, ReLU), summed, sigmoid. Spatial attention: channel-wise mean and max maps
    ``[B, 2, H, W]`` through a 7x7 conv, sigmoid. Input and output ``[B, C, H, W]`` float.

    Initialisation (:meth:`reset_parameters`): the layers that produce the gate logits start with zero
    weights and bias :data:`CBAM_GATE_BIAS`, so both gates start at ~0.98 for every input. With the
    generic Glorot init the gates start near 0.5 and each CBAM block scales its features by about 1/4;
    this encoder has no normalisation layers to undo that, so three blocks (N=64) shrink the bottleneck
    ~50x and make the network's output practically independent of its input at the start. Together with
    the 'swish' amplitude head that left training stuck at a flat-amplitude object (ptychodus's
    PtychoPINN-Torch defaults). Only the initial values change: trained weights load and behave as before.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels))
        self.spatial = nn.Conv2d(2, 1, kernel_size=7, padding=3)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Glorot hidden layer; zero weights and bias ``CBAM_GATE_BIAS`` for the two gate-logit layers.

        The channel gate's logit is the sum of the MLP on the average- and the max-pooled descriptor, so
        each half of it carries half the bias."""
        hidden, gate = cast(nn.Linear, self.mlp[0]), cast(nn.Linear, self.mlp[2])
        nn.init.xavier_uniform_(hidden.weight)
        nn.init.zeros_(hidden.bias)
        nn.init.zeros_(gate.weight)
        nn.init.constant_(gate.bias, CBAM_GATE_BIAS / 2)
        nn.init.zeros_(self.spatial.weight)
        nn.init.constant_(cast(torch.Tensor, self.spatial.bias), CBAM_GATE_BIAS)  # built with bias=True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        desc = torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=0)  # one MLP call for both
        att = self.mlp(desc)
        x = x * torch.sigmoid(att[:b] + att[b:]).view(b, c, 1, 1)
        maps = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(maps))


class Encoder(nn.Module):
    """``[B, C, N, N]`` float -> bottleneck ``[B, 128 s, N / 2**L, N / 2**L]``."""

    def __init__(self, channels: int, N: int, scale: int, cbam: bool) -> None:
        super().__init__()
        widths = encoder_widths(N, scale)
        ins = [channels, *widths[:-1]]
        self.blocks = nn.ModuleList(DoubleConv(i, o) for i, o in zip(ins, widths, strict=True))
        self.attention = nn.ModuleList(CBAM(o) for o in widths) if cbam else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.blocks):
            x = block(x)
            if self.attention is not None:
                x = self.attention[i](x)
            x = F.max_pool2d(x, 2)
        return x


class Decoder(nn.Module):
    """Bottleneck ``[B, 128 s, N/2**L, N/2**L]`` -> features ``[B, 32 s, N/2, N/2]``."""

    def __init__(self, N: int, scale: int) -> None:
        super().__init__()
        widths = decoder_widths(N, scale)
        ins = [encoder_widths(N, scale)[-1], *widths[:-1]]
        self.blocks = nn.ModuleList(DoubleConv(i, o) for i, o in zip(ins, widths, strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = F.interpolate(block(x), scale_factor=2.0, mode="nearest")
        return x


class Head(nn.Module):
    """Decoder features ``[B, 32 s, N/2, N/2]`` -> one output map ``[B, C, N, N]`` float32.

    ``activation`` is applied in float32 (also under autocast) so the output range is exact.
    """

    def __init__(self, scale: int, channels: int, N: int, pad_object: bool, probe_big: bool,
                 activation: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        cin = 32 * scale
        self.N = N
        self.activation = activation
        self.centre = _conv3x3(cin, channels) if pad_object else None
        self.outer: nn.Module | None = None
        self.outer_out: nn.Conv2d | None = None
        if probe_big or not pad_object:
            width = 16 * scale
            self.outer = DoubleConv(cin, width)
            self.outer_out = _conv3x3(width, channels)
        if pad_object and probe_big:
            # 1 on the border, 0 on the central N/2 x N/2 (where path 1 lives). Derived from N, so
            # not saved in the state dict.
            border = torch.ones(N, N)
            border[N // 4: N // 4 + N // 2, N // 4: N // 4 + N // 2] = 0.0
            self.register_buffer("border", border, persistent=False)
        else:
            self.border = None

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor | None = None
        if self.centre is not None:
            q = self.N // 4
            out = F.pad(self.activation(self.centre(feat).float()), (q, q, q, q))
        if self.outer is not None and self.outer_out is not None:
            up = F.interpolate(self.outer(feat), scale_factor=2.0, mode="nearest")
            full = self.activation(self.outer_out(up).float())
            if self.border is not None:
                full = full * self.border
            out = full if out is None else out + full
        if out is None:  # unreachable: the constructor always builds at least one path
            raise RuntimeError("Head has no output path")
        return out


@register_generator("cnn")
class CNNGenerator(nn.Module):
    """Encoder + amplitude and phase decoders/heads.

    ``forward(x)``: ``x`` ``[B, C, N, N]`` float32 normalised diffraction amplitudes (C =
    gridsize**2). Returns ``[B, C, N, N]`` complex64 object patches ``a * exp(i phi)`` with
    ``a >= 0`` (amplitude activation) and ``phi`` in ``(-pi, pi)`` radians.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        n, s, c = config.N, config.n_filters_scale, config.channels
        self.N = n
        self.channels, self.input_channels = c, config.input_channels
        self.encoder = Encoder(config.input_channels, n, s, config.cbam_encoder)
        self.decoder_amp = Decoder(n, s)
        self.decoder_phase = Decoder(n, s)
        amp_act = _AMP_ACTIVATIONS[config.amp_activation]
        self.head_amp = Head(s, c, n, config.pad_object, config.probe_big, amp_act)
        self.head_phase = Head(s, c, n, config.pad_object, config.probe_big, _phase_activation)
        # The amplitude of a fully transmitting object under the forward model's probe normalisation.
        self.amp_init_bias = inverse_amp_activation(config.amp_activation, 2.0 / config.probe_scale)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Glorot/Xavier-uniform weights and zero biases for every conv and linear layer, except:

        * the CBAM gate logits, which start near-identity (:meth:`CBAM.reset_parameters`);
        * the output biases of the amplitude head, which start at the pre-activation that gives a fully
          transmitting object's amplitude ``2 / probe_scale`` (0 for the default sigmoid with probe_scale 4,
          so that default is unchanged). With a zero bias the shifted 'swish' started at amplitude 0.28
          instead of 0.5: a third of the measured intensity, which the first steps then fixed by
          brightening every pixel alike (a flat object)."""
        init_generator(self, [self.head_amp.centre, self.head_amp.outer_out], self.amp_init_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encoder(x)
        amp = self.head_amp(self.decoder_amp(z))
        phase = self.head_phase(self.decoder_phase(z))
        return torch.polar(amp, phase)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of scalar parameters of ``model`` (only those with ``requires_grad`` by default)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def forward_flops(model: nn.Module, N: int, C: int) -> int:
    """FLOPs of one forward pass on one sample (``C`` patterns of ``N x N``), counted by
    ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matrix products, 2 per
    multiply-add; element-wise ops and FFTs are not counted). Divide by ``C`` for per pattern.

    ``model`` is a generator (``forward(x)``, fed its ``input_channels``: the C patterns and, with
    ``offset_channels``, their offset maps) or a module whose forward also takes ``relative_offsets``
    ``[B, C, 2]`` (zeros are passed).
    """
    from torch.utils.flop_counter import FlopCounterMode

    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    args: tuple[torch.Tensor, ...] = (torch.rand(1, int(getattr(model, "input_channels", C)), N, N, device=device),)
    if "relative_offsets" in inspect.signature(model.forward).parameters:
        args = (torch.rand(1, C, N, N, device=device), torch.zeros(1, C, 2, device=device))
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(*args)
    return int(counter.get_total_flops())
