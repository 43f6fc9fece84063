r"""NDR-Restore (Yao et al., TIP 2024): Restormer with a Neural Degradation Representation on its skips.

Written from the maths in the paper (arXiv:2310.12848) and ``docs/priors/denoisers.md`` (official code:
github.com/mdyao/NDR-Restore, MIT); parameter names follow the official layout so that
``model_L.pth`` loads key for key (:meth:`NDRRestore.from_official`, written in :mod:`zsir.models.ndr_official`).

Network (``docs/priors/denoisers.md``, "Architecture"):

* **Backbone** - Restormer: MDTA (transposed channel attention) + GDFN (gated depthwise feed-forward), WithBias
  LayerNorm, PixelUnshuffle down / PixelShuffle up, ``levels`` resolutions, optional refinement blocks.
* **NDR** - one learnable ``K x D`` dictionary (``randn`` init), shared by all scales.
* **DQ** (Degradation Query) - each pixel of ``m = conv3x3(e_l)`` attends over the K atoms:
  ``r = P_out(softmax_K(tau * q(m) NDR^T) NDR)`` with keys = values = the atoms, learnable ``tau``.
* **DI** (Degradation Injection) - a rank-R CP tri-axis attention ``A = (1/R) sum_r c_r (x) h_r (x) w_r``
  (factors predicted from axis-pooled features, computed with ``einsum``, never as a 5-D tensor) followed by
  the affine modulation ``f(r) * LRT(x) + g(r)``.
* **NDR-Degrad** - an auxiliary HQ -> LQ conv U-Net whose skips are modulated by the same maps through DI
  (training only).

``residual`` switches the four residual sites on which the official source and the authors' compiled code differ
(LRT, DI, DRL and the global output; ``docs/priors/denoisers.md``).

Two uses:

* **blind restorer** (``noise_map=False``, the official model): ``forward(x) -> restored``; images in [0, 1],
  channel order as trained (BGR for the official weights; :meth:`NDRRestore.restore` takes RGB).
* **non-blind Gaussian denoiser** (``noise_map=True``): ``forward(x, sigma) = D(x, sigma)`` with ``x`` in
  [0, 1] and ``sigma`` the noise std in **[0, 1] image units** (any value in ``[0, sigma_max]``). The network
  sees a constant noise-level channel and uses EDM preconditioning (Karras et al. 2022) around the image mean
  0.5, with ``sigma_data`` in [0, 1] units::

      D(x, sigma) = 0.5 + c_skip (x - 0.5) + c_out F(c_in (x - 0.5), c_noise)
      c_skip = sd^2 / (sigma^2 + sd^2),  c_out = sigma sd / sqrt(sigma^2 + sd^2),  c_in = 1 / sqrt(sigma^2 + sd^2)

  so ``D -> x`` as ``sigma -> 0`` (the identity is free at small sigma), ``D -> 0.5 + sd F`` at large sigma
  (a direct prediction, no ``sigma``-amplified error), and the target of ``F`` has unit scale at every sigma.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zsir.models.common import pad_and_run, precondition, sigma_batch

__all__ = [
    "NDRConfig",
    "NDRRestore",
    "RestorationNet",
    "DegradationNet",
    "LowRankTransform",
    "cp_attention",
]


# ----------------------------------------------------------------------------------------------------------------
# configuration
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class NDRConfig:
    """Hyper-parameters of :class:`NDRRestore` (``"official"`` and ``"lite"`` presets via :meth:`preset`).

    Attributes:
        dim: width of level 1 (doubles per level).
        num_blocks: Transformer blocks per level, encoder = decoder; the last entry is the latent stage.
            ``len(num_blocks)`` is the number of levels; the input is padded to ``2 ** (levels - 1)``.
        heads: MDTA heads per level.
        num_refinement_blocks: Transformer blocks at full resolution after the decoder.
        ffn_expansion_factor: GDFN expansion.
        ndr_entries, ndr_dim: NDR dictionary size ``K x D``.
        dq_dim: width of the degradation maps (the official ``n_feat=64``).
        cp_rank: CP rank R of the tri-axis attention (official 16).
        residual: the four residual sites (LRT, DI, DRL, global output; ``docs/priors/denoisers.md``).
        use_ndr, use_dq, use_di, use_degrad: ablation switches. ``use_dq`` needs ``use_ndr``; without DQ but
            with DI the maps are the mapped features themselves; ``use_degrad`` needs maps (DQ or DI). All off
            gives the plain Restormer-style backbone.
        degrad_dim: width of NDR-Degrad (official 48).
        noise_map: non-blind denoiser with a noise-level input channel and EDM preconditioning.
        sigma_data: ``sd`` of the preconditioning, [0, 1] units.
        sigma_max: largest noise std the denoiser is trained for, [0, 1] units (metadata).
        in_channels: image channels.
    """

    dim: int = 48
    num_blocks: tuple[int, ...] = (4, 6, 6, 8)
    heads: tuple[int, ...] = (1, 2, 4, 6)
    num_refinement_blocks: int = 3
    ffn_expansion_factor: float = 2.66
    ndr_entries: int = 32
    ndr_dim: int = 128
    dq_dim: int = 64
    cp_rank: int = 16
    residual: bool = False
    use_ndr: bool = True
    use_dq: bool = True
    use_di: bool = True
    use_degrad: bool = True
    degrad_dim: int = 48
    noise_map: bool = False
    sigma_data: float = 0.25
    sigma_max: float = 1.0
    in_channels: int = 3
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.num_blocks = tuple(int(b) for b in self.num_blocks)
        self.heads = tuple(int(h) for h in self.heads)
        if len(self.num_blocks) < 2:
            raise ValueError(f"num_blocks: expected at least 2 levels, got {self.num_blocks}")
        if len(self.heads) != len(self.num_blocks):
            raise ValueError(f"heads: expected {len(self.num_blocks)} entries (one per level), got {self.heads}")
        for lvl, h in enumerate(self.heads):
            if (self.dim * 2**lvl) % h:
                raise ValueError(f"heads: level {lvl + 1} width {self.dim * 2**lvl} is not divisible by {h}")
        if self.use_dq and not self.use_ndr:
            raise ValueError("use_dq=True needs use_ndr=True (DQ attends over the NDR atoms)")
        if self.use_degrad and not (self.use_dq or self.use_di):
            raise ValueError("use_degrad=True needs degradation maps: set use_dq or use_di")

    @property
    def levels(self) -> int:
        return len(self.num_blocks)

    @property
    def multiple(self) -> int:
        """Input H, W must be multiples of this (three 2x downsamplings in the official model: 8)."""
        return 2 ** (self.levels - 1)

    @property
    def has_maps(self) -> bool:
        return self.use_dq or self.use_di

    @classmethod
    def preset(cls, name: str, **overrides) -> NDRConfig:
        """``"official"`` (27.3 M-parameter restorer, ``docs/priors/denoisers.md``), ``"lite"`` (CPU-trainable),
        ``"lite-plain"`` (the lite backbone with NDR, DQ, DI and Degrad switched off) or ``"tiny"`` (tests)."""
        presets = {
            "official": {},
            "lite": dict(
                dim=16,
                num_blocks=(1, 1, 1),
                heads=(1, 2, 4),
                num_refinement_blocks=0,
                ndr_entries=16,
                ndr_dim=64,
                dq_dim=32,
                cp_rank=8,
                degrad_dim=16,
                residual=True,
                noise_map=True,
            ),
        }
        presets["tiny"] = dict(  # for tests and smoke runs only
            dim=8,
            num_blocks=(1, 1),
            heads=(1, 1),
            num_refinement_blocks=0,
            ndr_entries=4,
            ndr_dim=8,
            dq_dim=8,
            cp_rank=2,
            degrad_dim=8,
            residual=True,
            noise_map=True,
        )
        presets["lite-plain"] = dict(presets["lite"], use_ndr=False, use_dq=False, use_di=False, use_degrad=False)
        if name not in presets:
            raise ValueError(f"config: unknown preset {name!r}; known: {sorted(presets)}")
        return cls(**{**presets[name], **overrides})

    def to_dict(self) -> dict:
        d = asdict(self)
        d["num_blocks"] = list(self.num_blocks)
        d["heads"] = list(self.heads)
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> NDRConfig:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"NDR config: unknown fields {unknown}; known: {sorted(known)}")
        return cls(**dict(d))


# ----------------------------------------------------------------------------------------------------------------
# Restormer blocks
# ----------------------------------------------------------------------------------------------------------------
class LayerNorm2d(nn.Module):
    """ "WithBias" LayerNorm over channels at every pixel (parameters under ``body.`` as in the official code)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.body = nn.LayerNorm(dim, eps=1e-5)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class MDTA(nn.Module):
    """Multi-Dconv-head Transposed Attention: softmax(tau * q_hat k_hat^T) v over channels (per head)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=False)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, groups=dim * 3, bias=False)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv_dwconv(self.qkv(x)).reshape(b, 3, self.num_heads, c // self.num_heads, h * w).unbind(1)
        q = F.normalize(q, dim=-1)
        k = F.normalize(k, dim=-1)
        attn = ((q @ k.transpose(-2, -1)) * self.temperature).softmax(dim=-1)
        return self.project_out((attn @ v).reshape(b, c, h, w))


class GDFN(nn.Module):
    """Gated-Dconv Feed-forward: ``W_out(gelu(x1) * x2)`` with ``[x1, x2] = dwconv(W_in x)``."""

    def __init__(self, dim: int, expansion: float) -> None:
        super().__init__()
        hidden = int(dim * expansion)
        self.project_in = nn.Conv2d(dim, hidden * 2, 1, bias=False)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, bias=False)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(x1) * x2)


class TransformerBlock(nn.Module):
    """``x + MDTA(LN(x))`` then ``x + GDFN(LN(x))``."""

    def __init__(self, dim: int, num_heads: int, expansion: float) -> None:
        super().__init__()
        self.norm1 = LayerNorm2d(dim)
        self.attn = MDTA(dim, num_heads)
        self.norm2 = LayerNorm2d(dim)
        self.ffn = GDFN(dim, expansion)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class Downsample(nn.Sequential):
    """conv3x3 C -> C/2, PixelUnshuffle(2): (C, H, W) -> (2C, H/2, W/2)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(dim, dim // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2))


class Upsample(nn.Sequential):
    """conv3x3 C -> 2C, PixelShuffle(2): (C, H, W) -> (C/2, 2H, 2W)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(dim, dim * 2, 3, padding=1, bias=False), nn.PixelShuffle(2))


def _blocks(n: int, dim: int, heads: int, expansion: float, first: nn.Module | None = None) -> nn.Sequential:
    mods = [first] if first is not None else []
    return nn.Sequential(*mods, *[TransformerBlock(dim, heads, expansion) for _ in range(n)])


# ----------------------------------------------------------------------------------------------------------------
# NDR modules
# ----------------------------------------------------------------------------------------------------------------
def cp_attention(c: Tensor, h: Tensor, w: Tensor) -> Tensor:
    """Rank-R CP tensor ``A[b, c, h, w] = (1/R) sum_r c[b, r, c] h[b, r, h] w[b, r, w]``.

    Args:
        c: ``(B, R, C)`` channel factors; h: ``(B, R, H)``; w: ``(B, R, W)``.

    Returns:
        ``(B, C, H, W)``, computed by ``einsum`` without the ``(B, R, C, H, W)`` intermediate.
    """
    return torch.einsum("brc,brh,brw->bchw", c, h, w) / c.shape[1]


class _AxisFactor(nn.Sequential):
    """pool -> conv1x1 -> sigmoid; parameters at index 1 as in the official ``conv_C/H/W``."""

    def __init__(self, pool: nn.Module, cin: int, cout: int) -> None:
        super().__init__(pool, nn.Conv2d(cin, cout, 1), nn.Sigmoid())


class LowRankTransform(nn.Module):
    """Tri-axis CP attention ``LRT(x) = x * A(x)`` (``x + x * A(x)`` if ``residual``), ``docs/priors/denoisers.md``.

    The factors are predicted from the feature: ``c = sigmoid(W_c avgpool_HW x)`` reshaped to ``(B, R, C)``,
    ``h = sigmoid(W_h avgpool_W x)`` ``(B, R, H)``, ``w = sigmoid(W_w avgpool_H x)`` ``(B, R, W)``.
    """

    def __init__(self, channels: int, rank: int, residual: bool) -> None:
        super().__init__()
        self.rank = rank
        self.residual = residual
        self.conv_C = _AxisFactor(nn.AdaptiveAvgPool2d(1), channels, rank * channels)
        self.conv_H = _AxisFactor(nn.AdaptiveAvgPool2d((None, 1)), channels, rank)
        self.conv_W = _AxisFactor(nn.AdaptiveAvgPool2d((1, None)), channels, rank)

    def attention(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        fc = self.conv_C(x).reshape(b, self.rank, c)
        fh = self.conv_H(x).reshape(b, self.rank, h)
        fw = self.conv_W(x).reshape(b, self.rank, w)
        return cp_attention(fc, fh, fw)

    def forward(self, x: Tensor) -> Tensor:
        y = x * self.attention(x)
        return x + y if self.residual else y


class DegradationAttention(nn.Module):
    """DQ attention: ``softmax_K(tau q NDR^T) NDR`` per pixel, then a 1x1 projection (``docs/priors/denoisers.md``)."""

    def __init__(self, dim: int, ndr_dim: int) -> None:
        super().__init__()
        self.temperature = nn.Parameter(torch.ones(1))
        self.qkv = nn.Conv2d(dim, ndr_dim, 1)  # the query only (official name)
        self.project_out = nn.Conv2d(ndr_dim, dim, 1)

    def forward(self, x: Tensor, ndr: Tensor) -> Tensor:
        b, _, h, w = x.shape
        q = self.qkv(x).flatten(2).transpose(1, 2)  # (B, hw, D)
        attn = ((q @ ndr.transpose(-2, -1)) * self.temperature).softmax(dim=-1)  # (B, hw, K)
        return self.project_out((attn @ ndr).transpose(1, 2).reshape(b, -1, h, w))


class _Project(nn.Module):
    """Official ``FeedForward_DR``: a single 1x1 conv."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.project_out = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.project_out(x)


class DegradationQuery(nn.Module):
    """DQ: degradation map ``r = ffn(attn(m, NDR))`` (official ``Degradation_recognition``)."""

    def __init__(self, dim: int, ndr_dim: int) -> None:
        super().__init__()
        self.attn = DegradationAttention(dim, ndr_dim)
        self.ffn = _Project(dim)

    def forward(self, x: Tensor, ndr: Tensor) -> Tensor:
        return self.ffn(self.attn(x, ndr))


class DegradationInjection(nn.Module):
    """DI: ``f(r) * LRT_C(x) + g(r)`` (``+ x`` if ``residual``), ``d = LRT_r(conv1(r))`` computed once."""

    def __init__(self, dim: int, out_channels: int, rank: int, residual: bool) -> None:
        super().__init__()
        self.residual = residual
        self.conv1 = nn.Conv2d(dim, dim, 1)
        self.f = nn.Conv2d(dim, out_channels, 1)
        self.g = nn.Conv2d(dim, out_channels, 1)
        self.low_rank_transform1 = LowRankTransform(dim, rank, residual)
        self.low_rank_transform3 = LowRankTransform(out_channels, rank, residual)

    def forward(self, x: Tensor, r: Tensor) -> Tensor:
        d = self.low_rank_transform1(self.conv1(r))
        y = self.f(d) * self.low_rank_transform3(x) + self.g(d)
        return x + y if self.residual else y


class DRL(nn.Module):
    """Degradation representation learning at one skip: mapping, DQ, DI (``docs/priors/denoisers.md``).

    Returns ``(skip, map)``. Without DQ the map is the mapped feature; without DI the skip is ``x``.
    """

    def __init__(self, channels: int, cfg: NDRConfig) -> None:
        super().__init__()
        self.residual = cfg.residual and cfg.use_di
        self.mapping = nn.Conv2d(channels, cfg.dq_dim, 3, padding=1, bias=False)
        self.degradation_recog = DegradationQuery(cfg.dq_dim, cfg.ndr_dim) if cfg.use_dq else None
        self.inject_degradation = (
            DegradationInjection(cfg.dq_dim, channels, cfg.cp_rank, cfg.residual) if cfg.use_di else None
        )

    def forward(self, x: Tensor, ndr: Tensor | None) -> tuple[Tensor, Tensor]:
        m = self.mapping(x)
        r = self.degradation_recog(m, ndr) if self.degradation_recog is not None else m
        if self.inject_degradation is None:
            return x, r
        out = self.inject_degradation(x, r)
        return (out + x if self.residual else out), r


# ----------------------------------------------------------------------------------------------------------------
# the two networks
# ----------------------------------------------------------------------------------------------------------------
class RestorationNet(nn.Module):
    """NDR-Restore restorer (official ``RestorationNet`` key layout for 4 levels; generalised to L levels).

    ``forward(x, ndr) -> (out, maps)``: ``out = reconstruction(refinement(decoder))`` (``+ x[:, :3]`` when
    ``global_residual``); ``maps`` are the degradation maps of the skip levels 1..L-1 (empty without DRL).
    """

    def __init__(self, cfg: NDRConfig, in_channels: int, global_residual: bool) -> None:
        super().__init__()
        L, dim, e = cfg.levels, cfg.dim, cfg.ffn_expansion_factor
        self.levels = L
        self.global_residual = global_residual
        self.extractor = nn.Conv2d(in_channels, dim, 3, padding=1)
        for lvl in range(1, L):
            c = dim * 2 ** (lvl - 1)
            setattr(self, f"block{lvl}", _blocks(cfg.num_blocks[lvl - 1], c, cfg.heads[lvl - 1], e))
            setattr(self, f"pool{lvl}", Downsample(c))
        self.bottom = _blocks(cfg.num_blocks[-1], dim * 2 ** (L - 1), cfg.heads[-1], e)
        for lvl in range(1, L):
            c = dim * 2 ** (lvl - 1)
            if cfg.has_maps:
                setattr(self, f"res_connect{lvl}", DRL(c, cfg))
            setattr(self, f"up{lvl}", Upsample(2 * c))
            out_c = 2 * c if lvl == 1 else c  # level 1 keeps 2*dim channels (official block_up1)
            first = nn.Conv2d(2 * c, out_c, 1, bias=False)
            setattr(self, f"block_up{lvl}", _blocks(cfg.num_blocks[lvl - 1], out_c, cfg.heads[lvl - 1], e, first))
        self.refinement = _blocks(cfg.num_refinement_blocks, 2 * dim, cfg.heads[0], e)
        self.reconstruction = nn.Conv2d(2 * dim, cfg.in_channels, 3, padding=1)
        self.has_maps = cfg.has_maps

    def forward(self, x: Tensor, ndr: Tensor | None) -> tuple[Tensor, list[Tensor]]:
        feat = self.extractor(x)
        skips = []
        for lvl in range(1, self.levels):
            feat = getattr(self, f"block{lvl}")(feat)
            skips.append(feat)
            feat = getattr(self, f"pool{lvl}")(feat)
        maps = []
        if self.has_maps:
            for lvl in range(1, self.levels):
                skips[lvl - 1], r = getattr(self, f"res_connect{lvl}")(skips[lvl - 1], ndr)
                maps.append(r)
        feat = self.bottom(feat)
        for lvl in range(self.levels - 1, 0, -1):
            feat = torch.cat([skips[lvl - 1], getattr(self, f"up{lvl}")(feat)], dim=1)
            feat = getattr(self, f"block_up{lvl}")(feat)
        out = self.reconstruction(self.refinement(feat))
        if self.global_residual:
            out = out + x[:, : out.shape[1]]
        return out, maps


class _ResConv(nn.Module):
    """``x + relu(conv(relu(conv(x))))`` (official ``DoubleConv``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(dim, dim, 3, padding=1), nn.ReLU(), nn.Conv2d(dim, dim, 3, padding=1), nn.ReLU()
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x)


class DegradationNet(nn.Module):
    """NDR-Degrad: HQ -> LQ conv U-Net with DI on every skip, fed by the restorer's maps (``docs/priors/denoisers.md``).

    ``forward(hq, maps) = hq + reconstruction(decoder)``. Training only. The official RCAB refinement group is
    replaced by one more residual conv block (its weights are never loaded: ``degradation_net.*`` is ignored).
    """

    def __init__(self, cfg: NDRConfig) -> None:
        super().__init__()
        L, dim = cfg.levels, cfg.degrad_dim
        self.levels = L
        ch = cfg.in_channels
        self.extractor = nn.Conv2d(ch, dim, 3, padding=1)
        for lvl in range(1, L):
            c = dim * 2 ** (lvl - 1)
            setattr(self, f"block{lvl}", _ResConv(c))
            setattr(self, f"pool{lvl}", Downsample(c))
            setattr(self, f"inject_degradation{lvl}", DegradationInjection(cfg.dq_dim, c, cfg.cp_rank, cfg.residual))
            setattr(self, f"up{lvl}", Upsample(2 * c))
            out_c = 2 * c if lvl == 1 else c
            setattr(self, f"block_up{lvl}", nn.Sequential(nn.Conv2d(2 * c, out_c, 1, bias=False), _ResConv(out_c)))
        self.bottom = _ResConv(dim * 2 ** (L - 1))
        self.refinement = _ResConv(2 * dim)
        self.reconstruction = nn.Conv2d(2 * dim, ch, 3, padding=1)

    def forward(self, hq: Tensor, maps: Sequence[Tensor]) -> Tensor:
        feat = self.extractor(hq)
        skips = []
        for lvl in range(1, self.levels):
            feat = getattr(self, f"block{lvl}")(feat)
            skips.append(getattr(self, f"inject_degradation{lvl}")(feat, maps[lvl - 1]))
            feat = getattr(self, f"pool{lvl}")(feat)
        feat = self.bottom(feat)
        for lvl in range(self.levels - 1, 0, -1):
            feat = torch.cat([skips[lvl - 1], getattr(self, f"up{lvl}")(feat)], dim=1)
            feat = getattr(self, f"block_up{lvl}")(feat)
        return hq + self.reconstruction(self.refinement(feat))


# ----------------------------------------------------------------------------------------------------------------
# the model
# ----------------------------------------------------------------------------------------------------------------
class NDRRestore(nn.Module):
    """NDR-Restore: NDR dictionary + restorer (+ NDR-Degrad for training).

    Args:
        config: an :class:`NDRConfig` or a preset name (``"official"``, ``"lite"``, ``"lite-plain"``).
        **overrides: fields replacing those of the preset.

    Calling conventions (images ``(B, C, H, W)`` in [0, 1], H and W multiples of ``config.multiple``; use
    :meth:`restore` or :class:`zsir.priors.denoiser.DenoiserPrior` for padding):

    * blind: ``model(x)``; non-blind: ``model(x, sigma)`` with ``sigma`` a float or ``(B, 1, 1, 1)`` tensor in
      [0, 1] units.
    * training: :meth:`restore_with_maps` and :meth:`degrade`.
    """

    def __init__(self, config: NDRConfig | str = "lite", **overrides) -> None:
        super().__init__()
        cfg = NDRConfig.preset(config, **overrides) if isinstance(config, str) else replace(config, **overrides)
        self.config = cfg
        self.bgr = False  # True for the official weights (trained on cv2 BGR images)
        if cfg.use_ndr:
            self.degradation_representations = nn.Parameter(torch.randn(1, cfg.ndr_entries, cfg.ndr_dim))
        else:
            self.register_parameter("degradation_representations", None)
        in_ch = cfg.in_channels + (1 if cfg.noise_map else 0)
        self.restoration_net = RestorationNet(cfg, in_ch, global_residual=cfg.residual and not cfg.noise_map)
        self.degradation_net = DegradationNet(cfg) if cfg.use_degrad else None

    @property
    def multiple(self) -> int:
        return self.config.multiple

    def restore_with_maps(self, x: Tensor, sigma: float | Tensor | None = None) -> tuple[Tensor, list[Tensor]]:
        """Restoration and the degradation maps ``r_l`` (one per skip level).

        Args:
            x: ``(B, C, H, W)`` degraded image in [0, 1] (values may exceed the range); H, W multiples of
                :attr:`multiple`.
            sigma: noise std in [0, 1] units (non-blind models only), float or ``(B, 1, 1, 1)``.
        """
        cfg = self.config
        if x.dim() != 4 or x.shape[1] != cfg.in_channels:
            raise ValueError(f"x: expected (B, {cfg.in_channels}, H, W), got {tuple(x.shape)}")
        if x.shape[-2] % cfg.multiple or x.shape[-1] % cfg.multiple:
            raise ValueError(f"x: H and W must be multiples of {cfg.multiple}, got {tuple(x.shape[-2:])}")
        ndr = self.degradation_representations
        if not cfg.noise_map:
            return self.restoration_net(x, ndr)
        c_skip, c_out, c_in, c_noise = precondition(sigma_batch(sigma, x), cfg.sigma_data)
        inp = torch.cat([c_in * (x - 0.5), c_noise.expand(-1, 1, *x.shape[-2:])], dim=1)
        out, maps = self.restoration_net(inp, ndr)
        return 0.5 + c_skip * (x - 0.5) + c_out * out, maps

    def forward(self, x: Tensor, sigma: float | Tensor | None = None) -> Tensor:
        """Restored / denoised image in [0, 1] units (not clamped); see :meth:`restore_with_maps`."""
        return self.restore_with_maps(x, sigma)[0]

    def degrade(self, clean: Tensor, maps: Sequence[Tensor]) -> Tensor:
        """NDR-Degrad: re-create the degraded image from ``clean`` and the restorer's maps (training only)."""
        if self.degradation_net is None:
            raise RuntimeError("degrade: this model has no NDR-Degrad network (use_degrad=False)")
        return self.degradation_net(clean, maps)

    def restoration_parameters(self) -> dict[str, Tensor]:
        """State dict of the inference part (NDR + restorer), as shipped."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("degradation_net.")}

    # ----- blind use of the official weights --------------------------------------------------------------------
    @torch.no_grad()
    def restore(self, img: Tensor, sigma: float | Tensor | None = None) -> Tensor:
        """Restore an RGB image in [0, 1]: BGR flip if the weights need it, reflect-pad to :attr:`multiple`,
        run, crop, clip to [0, 1].

        Args:
            img: ``(B, 3, H, W)`` or ``(3, H, W)`` RGB in [0, 1].
            sigma: noise std in [0, 1] units, for non-blind models only.
        """

        def run(x: Tensor) -> Tensor:
            x = x.flip(1) if self.bgr else x
            out = self(x, sigma) if self.config.noise_map else self(x)
            return out.flip(1) if self.bgr else out

        return pad_and_run(run, img, self.multiple, self.config.in_channels).clamp(0, 1)

    @classmethod
    def from_official(
        cls,
        path: str | Path | Mapping[str, Tensor],
        residual: bool | str = "auto",
        probe: Tensor | None = None,
        config: NDRConfig | str = "official",
    ) -> NDRRestore:
        """Load the authors' ``model_L.pth`` (or any checkpoint in that layout) as a blind BGR restorer; see
        :func:`zsir.models.ndr_official.load_official` for the key handling and the residual detection."""
        from zsir.models.ndr_official import load_official

        return load_official(path, residual=residual, probe=probe, config=config)
