r"""Two convolutional non-blind Gaussian denoisers for the built-in prior, written from their papers.

Both take an RGB image ``x`` in [0, 1] and the noise std ``sigma`` in **[0, 1] units** and use the same EDM
preconditioning (Karras et al. 2022, Eq. 7 and Table 1) around the image mean 0.5 as the NDR backbone
(``zsir.models.ndr``), so every architecture is trained with one loss::

    D(x, sigma) = 0.5 + c_skip (x - 0.5) + c_out F([c_in (x - 0.5), c_noise])
    c_skip = sd^2 / (sigma^2 + sd^2),  c_out = sigma sd / sqrt(sigma^2 + sd^2),  c_in = 1 / sqrt(sigma^2 + sd^2)
    c_noise = log(sigma) / 4   (a constant noise-level map, one channel)

* :class:`UnshuffleCNN` (``arch="unshuffle"``), after FFDNet (Zhang, Zuo, Zhang, *FFDNet: Toward a Fast and
  Flexible Solution for CNN-Based Image Denoising*, TIP 2018, Sec. III-A and Fig. 1): a 2x2 pixel-unshuffle of
  the image (4 C sub-images), the noise-level map concatenated at half resolution, a plain stack of ``depth``
  3x3 convolutions (Conv+ReLU, then Conv+BN+ReLU if ``batch_norm``, then Conv), pixel-shuffle back.
* :class:`ResUNet` (``arch="unet"``), after DRUNet (Zhang et al., *Plug-and-Play Image Restoration with Deep
  Denoiser Prior*, TPAMI 2021, Sec. 3.1 and Fig. 1): a U-Net of ``len(widths)`` scales with ``blocks``
  residual blocks (Conv-ReLU-Conv + identity) per scale, 2x2 strided convolutions down, 2x2 transposed
  convolutions up, skip connections by addition, the noise-level map as an extra input channel, optionally
  bias-free (``bias=False``, the paper's choice).

Initialisation: He (Kaiming) normal for every convolution (gain for ReLU where one follows), and the second
convolution of each residual block at zero, so the networks pass a unit-scale signal at the start of training.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zsir.models.common import pad_and_run, plain_conv_stack, precondition, sigma_batch

__all__ = ["UnshuffleConfig", "UnshuffleCNN", "ResUNetConfig", "ResUNet"]


class _Denoiser(nn.Module):
    """Shared calling conventions: ``model(x, sigma)``, :meth:`restore`, the training hooks of
    :mod:`zsir.models.train` (``restore_with_maps``, ``restoration_parameters``, ``degradation_net``)."""

    degradation_net = None  # no NDR-Degrad branch: training_loss uses the restoration term only

    @property
    def multiple(self) -> int:
        return self.config.multiple

    def body(self, inp: Tensor) -> Tensor:  # pragma: no cover - defined by subclasses
        raise NotImplementedError

    def forward(self, x: Tensor, sigma: float | Tensor | None = None) -> Tensor:
        """Denoised image in [0, 1] units (not clamped).

        Args:
            x: ``(B, C, H, W)`` noisy image in [0, 1] (values may exceed the range); H, W multiples of
                :attr:`multiple`.
            sigma: noise std in [0, 1] units, a float or ``(B, 1, 1, 1)``.
        """
        cfg = self.config
        if x.dim() != 4 or x.shape[1] != cfg.in_channels:
            raise ValueError(f"x: expected (B, {cfg.in_channels}, H, W), got {tuple(x.shape)}")
        if x.shape[-2] % cfg.multiple or x.shape[-1] % cfg.multiple:
            raise ValueError(f"x: H and W must be multiples of {cfg.multiple}, got {tuple(x.shape[-2:])}")
        c_skip, c_out, c_in, c_noise = precondition(sigma_batch(sigma, x), cfg.sigma_data)
        inp = torch.cat([c_in * (x - 0.5), c_noise.expand(-1, 1, *x.shape[-2:])], dim=1)
        return 0.5 + c_skip * (x - 0.5) + c_out * self.body(inp)

    def restore_with_maps(self, x: Tensor, sigma: float | Tensor | None = None) -> tuple[Tensor, list[Tensor]]:
        """``(self(x, sigma), [])``: these networks have no degradation maps."""
        return self(x, sigma), []

    def restoration_parameters(self) -> dict[str, Tensor]:
        """The state dict (everything is inference weights)."""
        return dict(self.state_dict())

    @torch.no_grad()
    def restore(self, img: Tensor, sigma: float | Tensor | None = None) -> Tensor:
        """Denoise an RGB image in [0, 1] (``(B, 3, H, W)`` or ``(3, H, W)``, any size): reflect-pad to
        :attr:`multiple`, run, crop, clip to [0, 1]. ``sigma`` in [0, 1] units."""
        return pad_and_run(lambda x: self(x, sigma), img, self.multiple, self.config.in_channels).clamp(0, 1)


class _Config:
    """``to_dict`` / ``from_dict`` for the config dataclasses below."""

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping):
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown fields {unknown}; known: {sorted(cls.__dataclass_fields__)}")
        return cls(**dict(d))


@dataclass
class UnshuffleConfig(_Config):
    """Hyper-parameters of :class:`UnshuffleCNN`.

    Attributes:
        width: channels of every hidden convolution (FFDNet colour model: 96).
        depth: number of 3x3 convolutions (FFDNet colour model: 12).
        batch_norm: BatchNorm after the middle convolutions (as in the paper).
        sigma_data: ``sd`` of the preconditioning, [0, 1] units.
        sigma_max: largest training noise std, [0, 1] units (metadata).
        in_channels: image channels.
    """

    width: int = 64
    depth: int = 10
    batch_norm: bool = False
    sigma_data: float = 0.25
    sigma_max: float = 1.0
    in_channels: int = 3

    def __post_init__(self) -> None:
        if self.depth < 2 or self.width < 1:
            raise ValueError(f"depth, width: expected depth >= 2 and width >= 1, got {self.depth}, {self.width}")

    @property
    def multiple(self) -> int:
        return 2


class UnshuffleCNN(_Denoiser):
    """FFDNet-style denoiser (module docstring): unshuffle 2x2, conv stack at half resolution, shuffle back.

    Args:
        config: an :class:`UnshuffleConfig` (default) ; ``**overrides`` replace its fields.
    """

    def __init__(self, config: UnshuffleConfig | None = None, **overrides) -> None:
        super().__init__()
        cfg = UnshuffleConfig(**{**(config.to_dict() if config else {}), **overrides})
        self.config = cfg
        c4 = 4 * cfg.in_channels
        self.net = plain_conv_stack(c4 + 1, cfg.width, c4, cfg.depth, batch_norm=cfg.batch_norm, bias=True)
        convs = [m for m in self.net if isinstance(m, nn.Conv2d)]
        for conv in convs:  # He init keeps the signal through the plain ReLU stack (PyTorch's default shrinks it)
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu" if conv is not convs[-1] else "linear")
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)

    def body(self, inp: Tensor) -> Tensor:
        c = self.config.in_channels
        img = F.pixel_unshuffle(inp[:, :c], 2)
        level = inp[:, c:, ::2, ::2]  # the noise-level map is constant: subsample it
        return F.pixel_shuffle(self.net(torch.cat([img, level], dim=1)), 2)


@dataclass
class ResUNetConfig(_Config):
    """Hyper-parameters of :class:`ResUNet`.

    Attributes:
        widths: channels per scale (DRUNet: 64, 128, 256, 512); ``len(widths)`` scales.
        blocks: residual blocks per scale on each side (DRUNet: 4) and in the bottleneck.
        bias: convolution biases (DRUNet is bias-free).
        sigma_data, sigma_max, in_channels: as :class:`UnshuffleConfig`.
    """

    widths: tuple[int, ...] = (16, 32, 64, 128)
    blocks: int = 1
    bias: bool = False
    sigma_data: float = 0.25
    sigma_max: float = 1.0
    in_channels: int = 3

    def __post_init__(self) -> None:
        self.widths = tuple(int(w) for w in self.widths)
        if len(self.widths) < 2 or self.blocks < 1:
            raise ValueError(f"widths, blocks: expected >= 2 scales and >= 1 block, got {self.widths}, {self.blocks}")

    @property
    def multiple(self) -> int:
        return 2 ** (len(self.widths) - 1)


class _ResBlock(nn.Module):
    def __init__(self, width: int, bias: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1, bias=bias)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class ResUNet(_Denoiser):
    """DRUNet-style residual U-Net denoiser (module docstring).

    Args:
        config: a :class:`ResUNetConfig` (default); ``**overrides`` replace its fields.
    """

    def __init__(self, config: ResUNetConfig | None = None, **overrides) -> None:
        super().__init__()
        cfg = ResUNetConfig(**{**(config.to_dict() if config else {}), **overrides})
        self.config = cfg
        w, b = cfg.widths, cfg.bias
        self.head = nn.Conv2d(cfg.in_channels + 1, w[0], 3, padding=1, bias=b)
        self.down = nn.ModuleList(
            nn.Sequential(*[_ResBlock(w[i], b) for _ in range(cfg.blocks)], nn.Conv2d(w[i], w[i + 1], 2, 2, bias=b))
            for i in range(len(w) - 1)
        )
        self.middle = nn.Sequential(*[_ResBlock(w[-1], b) for _ in range(cfg.blocks)])
        self.up = nn.ModuleList(
            nn.Sequential(
                nn.ConvTranspose2d(w[i + 1], w[i], 2, 2, bias=b), *[_ResBlock(w[i], b) for _ in range(cfg.blocks)]
            )
            for i in reversed(range(len(w) - 1))
        )
        self.tail = nn.Conv2d(w[0], cfg.in_channels, 3, padding=1, bias=b)
        for m in self.modules():  # He init; each residual block starts as the identity (its last conv at zero)
            if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="linear")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, _ResBlock):
                nn.init.kaiming_normal_(m.conv1.weight, nonlinearity="relu")
                nn.init.zeros_(m.conv2.weight)

    def body(self, inp: Tensor) -> Tensor:
        h = self.head(inp)
        skips = [h]
        for down in self.down:
            h = down(h)
            skips.append(h)
        h = self.middle(h)
        for up in self.up:
            h = up(h + skips.pop())
        return self.tail(h + skips.pop())
