r"""Update steps shared by the samplers: re-noising, noise injection and data-consistency steps.

Every state is **variance exploding** in [-1, 1] model units: ``x = x0 + sigma * eps``. (A VP state
``sqrt(abar) x0 + sqrt(1 - abar) eps`` is the VE state times ``sqrt(abar)``, so the DDIM / DiffPIR formulas
below are the VP formulas divided by ``sqrt(abar_next)``.)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from zsir.operators.base import LinearOperator
from zsir.samplers.base import randn

__all__ = [
    "noise_estimate",
    "renoise",
    "inject_noise",
    "renoise_or_inject",
    "texture_probe",
    "back_project",
    "ls_gradient",
    "residual",
    "initial_state",
    "informative_start",
    "interpolate_fill",
    "median_fill",
    "scale_factor",
    "unobserved_mask",
    "SIGNAL_VARIANCE",
]

SIGNAL_VARIANCE = 0.2  # variance of natural images in [-1, 1] model units (0.05 in [0, 1] units): the Wiener weight


def noise_estimate(x: Tensor, x0: Tensor, sigma: float | Tensor) -> Tensor:
    r"""Effective noise of a VE state: ``eps_hat = (x - x0) / sigma``."""
    return torch.sub(x, x0).div_(sigma)  # one new tensor, not two


def _fresh(x0: Tensor, generator: torch.Generator | None, draw: Callable[[], Tensor] | None) -> Tensor:
    return randn(x0.shape, generator, x0) if draw is None else draw()


def renoise(
    x0: Tensor,
    eps: Tensor,
    sigma_next: float | Tensor,
    zeta: float | Tensor,
    generator: torch.Generator | None,
    draw: Callable[[], Tensor] | None = None,
    out: Tensor | None = None,
) -> Tensor:
    r"""DDIM / DiffPIR re-noising to level ``sigma_next``:

    .. math:: x_{next} = x_0 + \sigma_{next} (\sqrt{1 - \zeta}\, \hat\epsilon + \sqrt{\zeta}\, n),\quad n \sim N(0, I)

    ``zeta = 0`` is deterministic DDIM; ``zeta = 1`` is fresh noise. ``draw`` replaces the standard normal draw of
    ``n`` (e.g. white image noise expressed in a complex Fourier basis). ``out`` receives ``x_next`` (it may be
    ``eps`` itself, which is then overwritten; default: a new tensor).
    """
    zeta_t = torch.as_tensor(zeta, dtype=x0.real.dtype, device=x0.device)
    s = torch.as_tensor(sigma_next, dtype=x0.real.dtype, device=x0.device)
    out = torch.addcmul(x0, s * torch.sqrt(1.0 - zeta_t), eps, out=out)  # two fused passes over the image, not six
    if zeta > 0 if isinstance(zeta, (int, float)) else bool((zeta_t > 0).any()):  # no device sync for a number
        out.addcmul_(s * torch.sqrt(zeta_t), _fresh(x0, generator, draw))
    return out


def inject_noise(
    x0: Tensor,
    z_hat_minus: Tensor,
    sigma_next: float | Tensor,
    eta: float,
    generator: torch.Generator | None,
    draw: Callable[[], Tensor] | None = None,
    out: Tensor | None = None,
) -> Tensor:
    r"""CM4IR noise injection (docs/samplers/cm4ir.md) to level ``sigma_next``:

    .. math:: x_{next} = x_0 + \sigma_{next} (\eta\, z + \sqrt{1 - \eta^2}\, \hat z^-),\quad z \sim N(0, I)

    where ``z_hat_minus = (x0_pre - x) / sigma`` is the **negated** noise estimate (DDIM would use ``+eps_hat``).
    ``out`` receives ``x_next`` (default: a new tensor).
    """
    # in place on the fresh draw (ours): fewer image-sized temporaries, the same operations in the same order
    kept = z_hat_minus * math.sqrt(max(1.0 - eta * eta, 0.0))
    noise = _fresh(x0, generator, draw).mul_(eta).add_(kept)
    del kept
    return torch.add(x0, noise.mul_(sigma_next), out=out)


def renoise_or_inject(
    x0: Tensor,
    eps: Tensor,
    sigma_next: float | Tensor,
    zeta: float | Tensor,
    generator: torch.Generator | None,
    eta_ni: float | None = None,
    draw: Callable[[], Tensor] | None = None,
    out: Tensor | None = None,
) -> Tensor:
    r"""The next state of a DDIM-type sampler: :func:`renoise` ``(x0, eps, sigma_next, zeta)`` or, with ``eta_ni``
    set, CM4IR's :func:`inject_noise` ``(x0, -eps, sigma_next, eta_ni)`` (the "and beyond" port of
    docs/samplers/cm4ir.md: the re-injected estimated noise is **reversed** and mixed with fresh noise by a
    variance-preserving rotation). ``out`` receives the result (it may be ``eps``; default: a new tensor).
    """
    if eta_ni is None:
        return renoise(x0, eps, sigma_next, zeta, generator, draw, out)
    return inject_noise(x0, -eps, sigma_next, eta_ni, generator, draw, out)


def texture_probe(
    denoise: Callable[[Tensor], Tensor],
    x: Tensor,
    level: float | Tensor,
    texture: float,
    generator: torch.Generator | None,
) -> Tensor:
    r"""The zero-mean, posterior-shaped perturbation of the pd knob ``texture`` (PnP, RDMD):

    .. math::

        \tfrac12 \left[D(x + t \sigma n) - D(x - t \sigma n)\right] \approx t \sigma J_D(x) n,\qquad
        J_D = \mathrm{Cov}[x_0 \mid x] / \sigma^2 \ \text{(Tweedie, for an MMSE denoiser)},

    with ``n ~ N(0, I)`` from ``generator``, ``sigma = level`` the denoiser's level (model units, a float or a
    ``(B, 1, 1, 1)`` tensor) and ``t = texture``. ``denoise`` maps an input to the denoiser's output at that level
    (two calls). The result is an odd function of the symmetric ``n``, so its mean is exactly zero: added to an
    estimate it raises the expected squared error by its own energy and moves nothing else.
    """
    n = randn(x.shape, generator, x).mul_(level).mul_(texture)
    return (denoise(x + n) - denoise(x - n)).mul_(0.5)


def back_project(
    x0: Tensor, y: Tensor, operator: LinearOperator, eta_reg: float | Tensor = 0.0, mu: float = 1.0
) -> Tensor:
    r"""Back-projection ``x0 - mu A^T (A A^T + eta_reg I)^{-1} (A x0 - y)``.

    With ``mu = 1`` and ``eta_reg = 0`` it is the projection onto ``{x : A x = y}`` (DDNM's range-null-space
    step). ``eta_reg`` is in squared model units of y.
    """
    correction = operator.pinv(residual(x0, y, operator), eta_reg)
    return x0 - correction if mu == 1.0 else torch.sub(x0, correction, alpha=mu)


def ls_gradient(x: Tensor, y: Tensor, operator: LinearOperator) -> Tensor:
    r"""Gradient of ``1/2 ||A x - y||^2``: ``A^T (A x - y)``."""
    return operator.At(residual(x, y, operator))


def residual(x: Tensor, y: Tensor, operator: LinearOperator) -> Tensor:
    r"""``A x - y``, subtracting in place when ``A x`` is a new tensor (one measurement-sized temporary fewer)."""
    ax = operator.A(x)
    shares_x = ax.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()  # an identity, a subsampling view
    same = ax.shape == torch.broadcast_shapes(ax.shape, y.shape) and ax.dtype == torch.result_type(ax, y)
    return ax.sub_(y) if same and not shares_x else ax - y


def initial_state(
    y: Tensor,
    operator: LinearOperator,
    sigma: float,
    generator: torch.Generator | None,
    informative: bool,
    sigma_y: Tensor | float = 0.0,
) -> Tensor:
    r"""Start state ``x = x_init + sigma n`` (VE, model units) of a sampler whose first level is ``sigma``.

    ``x_init`` is :func:`informative_start` when ``informative`` (a schedule truncated to a prior's ``sigma_max``),
    else 0: the pure-noise start of a full diffusion schedule (the VP ``x_T ~ N(0, I)``). ``sigma_y`` is the
    measurement noise std in model units (per sample).
    """
    x_shape = operator.x_shape(tuple(y.shape))
    if informative:
        x_init = informative_start(y, operator, sigma_y)
    else:
        x_init = torch.zeros(x_shape, device=y.device, dtype=y.dtype)
    return x_init + sigma * randn(x_shape, generator, y)


def scale_factor(y_shape: Sequence[int], x_shape: Sequence[int]) -> int:
    """Integer down-scaling factor between an image and its measurement (1 unless ``y`` is a smaller image)."""
    if len(y_shape) != 4 or y_shape[1] != x_shape[1]:
        return 1
    (hy, wy), (hx, wx) = y_shape[-2:], x_shape[-2:]
    if hy < hx and hx % hy == 0 and wx % wy == 0 and hx // hy == wx // wy:
        return hx // hy
    return 1


def interpolate_fill(x: Tensor, holes: Tensor, scales: Sequence[float] = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)) -> Tensor:
    r"""Fill ``holes`` (boolean, broadcastable to ``x``) by normalised convolution of the observed pixels.

    At the smallest Gaussian scale ``s`` (px) whose window reaches an observed pixel, a hole gets
    ``(g_s * (m x)) / (g_s * m)`` with ``m`` the observed-pixel indicator (Knutsson and Westin, *Normalized and
    differential convolution*, CVPR 1993): a smooth interpolation of the observed neighbours, within 0.3 dB of
    linear (Delaunay) interpolation on 80 %-missing natural images. Observed pixels are never changed; holes
    further than ``3 max(scales)`` px from every observed pixel get the sample's mean of the observed pixels.
    """
    holes = holes.expand_as(x)
    if not bool(holes.any()):
        return x
    if bool(holes.flatten(1).all(1).any()):
        raise ValueError("x: a sample has no observed pixel; the fill needs at least one")
    C = x.shape[1]
    m = (~holes).to(x.dtype)
    xm = x * m
    mean = xm.sum((-2, -1), keepdim=True) / m.sum((-2, -1), keepdim=True).clamp_min(1.0)
    out, todo = x.clone(), holes.clone()
    for s in scales:
        r = int(math.ceil(3.0 * s))
        g = torch.exp(-(torch.arange(-r, r + 1, device=x.device, dtype=x.dtype) ** 2) / (2.0 * s * s))
        g = (g / g.sum()).repeat(C, 1)

        def blur(t: Tensor, g=g, r=r) -> Tensor:  # separable, zero padding (the weights renormalise the border)
            t = F.conv2d(F.pad(t, (r, r, 0, 0)), g.view(C, 1, 1, -1), groups=C)
            return F.conv2d(F.pad(t, (0, 0, r, r)), g.view(C, 1, -1, 1), groups=C)

        num, den = blur(xm), blur(m)
        ok = todo & (den > 1e-3)
        out = torch.where(ok, num / den.clamp_min(1e-12), out)
        todo = todo & ~ok
        if not bool(todo.any()):
            return out
    return torch.where(todo, mean.expand_as(x), out)


def informative_start(
    y: Tensor, operator: LinearOperator, sigma_y: Tensor | float = 0.0, fill: str = "interp"
) -> Tensor:
    r"""The informative initial image shared by the samplers when a schedule does not start from pure noise.

    Per kind of measurement (all in model units):

    * ``y`` a down-scaled image (super-resolution): bicubic up-sampling of ``y``;
    * otherwise the regularised inverse ``A^T (A A^T + \eta I)^{-1} y`` with the Wiener weight
      ``eta = sigma_y^2 / 0.2`` (noise over signal variance; 0.2 is the variance of natural images in model
      units): the exact pseudo-inverse of an ill-conditioned blur amplifies the measurement noise without bound;
    * then the pixels the operator never observes (inpainting holes, which the inverse leaves at 0 = mid-grey) are
      filled: ``fill="interp"`` by :func:`interpolate_fill`, ``"median"`` by CM4IR's :func:`median_fill`,
      ``"none"`` not at all.

    ``sigma_y`` is the measurement noise std in **model units** (a float or per-sample ``(B, 1, 1, 1)``).
    """
    if fill not in ("interp", "median", "none"):
        raise ValueError(f"fill: expected 'interp', 'median' or 'none', got {fill!r}")
    x_shape = operator.x_shape(tuple(y.shape))
    if scale_factor(y.shape, x_shape) > 1:
        return F.interpolate(y, size=tuple(x_shape[-2:]), mode="bicubic", align_corners=False)
    x = operator.pinv(y, sigma_y**2 / SIGNAL_VARIANCE)
    if fill == "none":
        return x
    holes = unobserved_mask(operator, (1, *x_shape[1:]), device=x.device, dtype=x.dtype)
    return (interpolate_fill if fill == "interp" else median_fill)(x, holes)


MEDIAN_BUDGET = 1 << 24  # elements of one unfolded strip of median_fill


def unobserved_mask(operator: LinearOperator, x_shape: Sequence[int], *, device=None, dtype=torch.float32) -> Tensor:
    """Boolean ``x_shape`` mask of the pixels the operator never observes (``A^T A 1 == 0``)."""
    ones = torch.ones(tuple(x_shape), device=device, dtype=dtype)
    return operator.AtA(ones) == 0


def median_fill(x: Tensor, holes: Tensor, start_radius: int = 2) -> Tensor:
    """Fill ``holes`` (a boolean mask broadcastable to ``x``) by repeated nan-medians over growing windows.

    Each pass replaces every hole that has at least one known pixel in its ``(2r+1)^2`` window (per channel) by
    the median of the known pixels of that window in the previous pass; ``r`` starts at ``start_radius`` and
    grows by one per pass until no hole is left (docs/samplers/cm4ir.md). Observed pixels are never changed. Batched;
    the unfold is done in row strips so large holes stay within a fixed memory budget.
    """
    holes = holes.expand_as(x)
    if not bool(holes.any()):
        return x
    if bool(holes.flatten(1).all(1).any()):
        raise ValueError("x: a sample has no observed pixel; median fill needs at least one")
    B, C, H, W = x.shape
    cur = x.masked_fill(holes, float("nan")).reshape(B * C, 1, H, W)
    r = start_radius
    while bool(torch.isnan(cur).any()):
        k = 2 * r + 1
        padded = F.pad(cur, (r, r, r, r), value=float("nan"))
        rows = max(1, MEDIAN_BUDGET // (k * k * W * B * C))
        new = cur.clone()
        for i0 in range(0, H, rows):
            i1 = min(i0 + rows, H)
            if not bool(torch.isnan(cur[..., i0:i1, :]).any()):
                continue
            strip = padded[..., i0 : i1 + 2 * r, :]
            win = F.unfold(strip, k).reshape(B * C, k * k, i1 - i0, W)
            med = torch.nanmedian(win, dim=1).values.unsqueeze(1)
            block = new[..., i0:i1, :]
            new[..., i0:i1, :] = torch.where(torch.isnan(block), med, block)
        cur = new
        r += 1
    return cur.reshape(B, C, H, W)
