r"""Image quality metrics through ``piq`` and ``lpips`` (nothing they already compute is re-implemented).

Every function takes ``x`` (the estimate) and ``ref`` (the ground truth), both ``(B, C, H, W)`` in [0, 1] with
``C`` in {1, 3}, and returns a **per-image** tensor of shape ``(B,)`` (no reduction over the batch; average it
yourself). Higher is better for PSNR, SSIM, HaarPSI and VIF; lower is better for LPIPS, MDSI and GMSD.

Grey images: PSNR, SSIM, HaarPSI, GMSD and VIF work on one channel as is; MDSI and LPIPS are defined on RGB, so
a grey image is replicated to three channels first (what ``piq`` itself would do for MDSI, without its warning).

Sizes: SSIM needs ``H, W >= 11`` (its Gaussian window), VIF ``>= 41`` (four scales); smaller inputs raise
ValueError.

LPIPS needs the ImageNet weights of its torchvision backbone (AlexNet or VGG16) in the torch hub cache
(``$TORCH_HOME/hub/checkpoints``, default ``~/.cache/torch/hub/checkpoints``). zsir never downloads them: when
the file is absent, :func:`lpips` raises :class:`MetricUnavailable` naming the file, its URL and the folder.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

__all__ = [
    "MetricUnavailable",
    "psnr",
    "ssim",
    "lpips",
    "lpips_weights_path",
    "haarpsi",
    "mdsi",
    "gmsd",
    "vif",
    "METRICS",
    "compute_metrics",
]


class MetricUnavailable(RuntimeError):
    """A metric cannot be computed here (e.g. LPIPS without its backbone weights offline)."""


def _check(x: Tensor, ref: Tensor, data_range: float = 1.0) -> tuple[Tensor, Tensor]:
    for name, t in (("x", x), ("ref", ref)):
        if not isinstance(t, Tensor) or t.dim() != 4 or t.shape[1] not in (1, 3):
            got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{name}: expected a (B, C, H, W) tensor with C in {{1, 3}}, got {got}")
        if not t.is_floating_point() or not torch.isfinite(t).all():
            raise ValueError(f"{name}: expected finite floating-point values in [0, {data_range:g}]")
    if x.shape != ref.shape:
        raise ValueError(f"x: shape {tuple(x.shape)} differs from ref's {tuple(ref.shape)}")
    lo, hi = float(torch.minimum(x.min(), ref.min())), float(torch.maximum(x.max(), ref.max()))
    if lo < 0.0 or hi > data_range:
        raise ValueError(
            f"x, ref: expected values in [0, {data_range:g}], got range [{lo:.4g}, {hi:.4g}] (clamp first)"
        )
    return x, ref.to(x.dtype)


def _crop(t: Tensor, border: int) -> Tensor:
    if border < 0:
        raise ValueError(f"crop_border: expected a non-negative integer, got {border}")
    if border and 2 * border >= min(t.shape[-2:]):
        raise ValueError(f"crop_border: {border} leaves nothing of a {t.shape[-2]}x{t.shape[-1]} image")
    return t[..., border : t.shape[-2] - border, border : t.shape[-1] - border] if border else t


def _rgb(t: Tensor) -> Tensor:
    return t.expand(-1, 3, -1, -1) if t.shape[1] == 1 else t


def _min_size(x: Tensor, size: int, name: str) -> None:
    if min(x.shape[-2:]) < size:
        raise ValueError(f"x: {name} needs images of at least {size}x{size}, got {x.shape[-2]}x{x.shape[-1]}")


def _fidelity_inputs(x: Tensor, ref: Tensor, data_range: float, crop_border: int, uint8: bool):
    x, ref = _check(x, ref, data_range)
    if uint8:
        x, ref = ((t * 255 / data_range).round() * data_range / 255 for t in (x, ref))
    return _crop(x, crop_border), _crop(ref, crop_border)


def psnr(x: Tensor, ref: Tensor, data_range: float = 1.0, crop_border: int = 0, uint8: bool = False) -> Tensor:
    r"""Peak signal-to-noise ratio ``10 log10(data_range^2 / MSE)`` in dB, per image ``(B,)`` (``piq.psnr``).

    Args:
        data_range: the peak value of the images (1.0 for [0, 1] images).
        crop_border: pixels removed at each side first (SR papers shave the scale factor).
        uint8: quantise both images to 8 bits (``round(255 x / data_range)``) first, as KAIR/DiffPIR score saved
            PNGs.
    """
    import piq

    x, ref = _fidelity_inputs(x, ref, data_range, crop_border, uint8)
    return piq.psnr(x, ref, data_range=data_range, reduction="none")


def ssim(x: Tensor, ref: Tensor, data_range: float = 1.0, crop_border: int = 0, uint8: bool = False) -> Tensor:
    """Structural similarity (``piq.ssim``: 11x11 Gaussian window, std 1.5, per channel then averaged), ``(B,)``.

    Options as in :func:`psnr`.
    """
    import piq

    x, ref = _fidelity_inputs(x, ref, data_range, crop_border, uint8)
    _min_size(x, 11, "SSIM")
    return piq.ssim(x, ref, data_range=data_range, reduction="none")


def haarpsi(x: Tensor, ref: Tensor) -> Tensor:
    """Haar wavelet-based perceptual similarity (``piq.haarpsi``), in [0, 1], higher is better, ``(B,)``."""
    import piq

    x, ref = _check(x, ref)
    return piq.haarpsi(x, ref, data_range=1.0, reduction="none")


def mdsi(x: Tensor, ref: Tensor) -> Tensor:
    """Mean deviation similarity index (``piq.mdsi``), lower is better; grey inputs are replicated, ``(B,)``."""
    import piq

    x, ref = _check(x, ref)
    return piq.mdsi(_rgb(x), _rgb(ref), data_range=1.0, reduction="none")


def gmsd(x: Tensor, ref: Tensor) -> Tensor:
    """Gradient magnitude similarity deviation (``piq.gmsd``), lower is better, ``(B,)``."""
    import piq

    x, ref = _check(x, ref)
    return piq.gmsd(x, ref, data_range=1.0, reduction="none")


def vif(x: Tensor, ref: Tensor) -> Tensor:
    """Pixel-domain visual information fidelity (``piq.vif_p``), higher is better; needs ``H, W >= 41``, ``(B,)``."""
    import piq

    x, ref = _check(x, ref)
    _min_size(x, 41, "VIF")
    return piq.vif_p(x, ref, data_range=1.0, reduction="none")


# ----- LPIPS --------------------------------------------------------------------------------------------------
_LPIPS_BACKBONES = {"alex": "AlexNet_Weights", "vgg": "VGG16_Weights"}
_LPIPS_MODELS: dict[str, torch.nn.Module] = {}


def lpips_weights_path(net: str = "vgg") -> tuple[Path, str]:
    """Where torchvision looks for the LPIPS backbone of ``net`` ("vgg" or "alex"): ``(local path, URL)``."""
    if net not in _LPIPS_BACKBONES:
        raise ValueError(f"net: expected one of {sorted(_LPIPS_BACKBONES)}, got {net!r}")
    import torchvision.models as tvm

    url = getattr(tvm, _LPIPS_BACKBONES[net]).IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1], url


def lpips(x: Tensor, ref: Tensor, net: str = "vgg") -> Tensor:
    """Learned perceptual image patch similarity (``lpips`` package, v0.1 linear layers), lower is better, ``(B,)``.

    ``net="vgg"`` is what DPS/RDMD report; ``"alex"`` is the lpips package's default. Grey inputs are replicated
    to RGB. The model is built once per ``net`` and device and reused.

    Raises:
        MetricUnavailable: the torchvision backbone weights are not in the torch hub cache (no download is tried).
    """
    x, ref = _check(x, ref)
    path, url = lpips_weights_path(net)
    if not path.is_file():
        raise MetricUnavailable(
            f"LPIPS ({net}) needs the torchvision backbone weights {path.name}, which are not in {path.parent} "
            f"(torch.hub.get_dir()/checkpoints; set TORCH_HOME to use another folder). zsir does not download "
            f"them; fetch {url} into that folder on a machine with network access."
        )
    key = f"{net}:{x.device}"
    if key not in _LPIPS_MODELS:
        import lpips as lpips_pkg

        _LPIPS_MODELS[key] = lpips_pkg.LPIPS(net=net, verbose=False).to(x.device).eval()
    model = _LPIPS_MODELS[key]
    with torch.no_grad():
        return model(_rgb(x).float(), _rgb(ref).float(), normalize=True).flatten().to(x.dtype)


METRICS = {"psnr": psnr, "ssim": ssim, "lpips": lpips, "haarpsi": haarpsi, "mdsi": mdsi, "gmsd": gmsd, "vif": vif}


def compute_metrics(
    x: Tensor, ref: Tensor, names: tuple[str, ...] = tuple(METRICS)
) -> tuple[dict[str, Tensor | None], dict[str, str]]:
    """Every metric of ``names`` that can be computed on these images.

    Returns:
        ``(values, unavailable)``: ``values[name]`` is a ``(B,)`` tensor, or ``None`` when the metric cannot be
        computed here (LPIPS without weights, SSIM/VIF on too small images); ``unavailable[name]`` says why.
    """
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        from zsir.registry import suggest

        raise ValueError(
            f"names: unknown metric {unknown[0]!r}; known: {', '.join(METRICS)}.{suggest(unknown[0], list(METRICS))}"
        )
    _check(x, ref)  # bad inputs raise here; what fails below is a size limit or missing weights
    values: dict[str, Tensor | None] = {}
    unavailable: dict[str, str] = {}
    for name in names:
        try:
            values[name] = METRICS[name](x, ref)
        except (MetricUnavailable, ValueError) as err:
            values[name], unavailable[name] = None, str(err)
    return values, unavailable
