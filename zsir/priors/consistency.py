r"""Consistency models (Song et al. 2023) as priors: ``kind == "consistency"``.

The consistency function, with sigma in model units ([-1, 1] data, the units the CMs were trained in):

.. math::

    f(x, \sigma) = \mathrm{clamp}\big(c_{skip}(s) x + c_{out}(s) F(c_{in}(s) x, 250 \ln \sigma), -1, 1\big),

    c_{skip}(s) = \frac{\sigma_d^2}{(s - \sigma_{min})^2 + \sigma_d^2},\quad
    c_{out}(s) = \frac{(s - \sigma_{min}) \sigma_d}{\sqrt{s^2 + \sigma_d^2}},\quad
    c_{in}(s) = \frac{1}{\sqrt{s^2 + \sigma_d^2}},

with ``s = sigma`` by default. CM4IR's injection type 0 (docs/samplers/cm4ir.md) gives the network the time of a
decoupled level ``(1 + delta) tau`` but the scalings of ``tau``: pass ``scalings_sigma=tau`` to
:meth:`Prior.denoise` for that. The network time is a float tensor of length B, since diffusers truncates
Python-number timesteps to integers (docs/priors/consistency.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from zsir import units
from zsir.priors.base import Prior
from zsir.priors.diffusers import load_unet, locate_pipeline
from zsir.priors.diffusion import call_network, unet_multiple

__all__ = ["ConsistencyPrior", "boundary_scalings"]


def boundary_scalings(sigma: Tensor, sigma_min: float, sigma_data: float) -> tuple[Tensor, Tensor, Tensor]:
    """``(c_skip, c_out, c_in)`` of the consistency boundary condition (module docstring); sigma in model units."""
    sd2 = sigma_data**2
    c_skip = sd2 / ((sigma - sigma_min) ** 2 + sd2)
    c_out = (sigma - sigma_min) * sigma_data / (sigma**2 + sd2).sqrt()
    c_in = 1.0 / (sigma**2 + sd2).sqrt()
    return c_skip, c_out, c_in


class ConsistencyPrior(Prior):
    """A consistency-model network ``F(x, t, class_labels)`` as a consistency function (module docstring).

    Args:
        net: diffusers ``UNet2DModel`` (or any ``net(x, t, class_labels=...)``).
        sigma_min, sigma_max, sigma_data: the model's noise range and data std (model units).
        class_labels: default class label(s) for class-conditional networks (an int or B ints); may be
            overridden per call with ``denoise(..., class_labels=...)``. Using the ground-truth class of the
            image being restored is oracle information (docs/priors/consistency.md).
        clip: clamp outputs to [-1, 1].
        channels, multiple, train_size, name: as in :class:`Prior`.
    """

    fully_convolutional = False  # trained at one size: tiles at max(train_size) by default

    kind = "consistency"

    def __init__(
        self,
        net: nn.Module,
        *,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        sigma_data: float = 0.5,
        class_labels: int | Tensor | list[int] | None = None,
        clip: bool = True,
        channels: int = 3,
        multiple: int = 1,
        train_size: tuple[int, int] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(channels=channels, multiple=multiple, train_size=train_size, name=name or type(net).__name__)
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"sigma_min, sigma_max: expected 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.net = net.eval().requires_grad_(False)
        self.sigma_min, self.sigma_max, self.sigma_data = float(sigma_min), float(sigma_max), float(sigma_data)
        self.class_labels = class_labels
        self.clip = clip
        config = getattr(net, "config", None)
        self.num_classes = getattr(config, "num_class_embeds", None) if config is not None else None

    def extra_repr(self) -> str:
        return f"name={self.name!r}, sigma=[{self.sigma_min}, {self.sigma_max}], classes={self.num_classes}"

    def _labels(self, labels, batch: int, device: torch.device) -> Tensor | None:
        labels = self.class_labels if labels is None else labels
        if labels is None:
            if self.num_classes:
                raise ValueError(
                    f"class_labels: {self.name} is class-conditional ({self.num_classes} classes); pass "
                    "class_labels= to the prior or to denoise()"
                )
            return None
        t = torch.as_tensor(labels, dtype=torch.long, device=device).flatten()
        if t.numel() not in (1, batch):
            raise ValueError(f"class_labels: expected an int or {batch} labels, got {t.numel()}")
        if self.num_classes and ((t < 0) | (t >= self.num_classes)).any():
            raise ValueError(f"class_labels: expected values in [0, {self.num_classes}), got {t.tolist()}")
        return t.expand(batch)

    def _denoise(
        self, x: Tensor, sigma: Tensor, *, scalings_sigma: float | Tensor | None = None, class_labels=None
    ) -> Tensor:
        """Consistency function at ``sigma`` (B, 1, 1, 1), model units; ``scalings_sigma`` for the scalings."""
        B = x.shape[0]
        s = sigma
        if scalings_sigma is not None:
            s = units.as_sigma(scalings_sigma, B, device=x.device, dtype=x.dtype, name="scalings_sigma")
            s = s.clamp(self.sigma_min, self.sigma_max)
        c_skip, c_out, c_in = boundary_scalings(s, self.sigma_min, self.sigma_data)
        t = 250.0 * torch.log(sigma.flatten().to(torch.float32))
        labels = self._labels(class_labels, B, x.device)
        kwargs = {"class_labels": labels} if labels is not None else {}
        out = call_network(self.net, c_in * x, t, **kwargs)[:, : self.channels]
        x0 = c_skip * x + c_out * out
        return x0.clamp(-1.0, 1.0) if self.clip else x0

    @classmethod
    def _from_unet(cls, unet: nn.Module, scheduler: Mapping[str, Any] | None, name: str, **kwargs) -> ConsistencyPrior:
        sched = dict(scheduler or {})
        size = unet.config.sample_size
        for key, default in (("sigma_min", 0.002), ("sigma_max", 80.0), ("sigma_data", 0.5)):
            kwargs.setdefault(key, sched.get(key, default))
        return cls(
            unet,
            channels=unet.config.in_channels,
            multiple=unet_multiple(unet),
            train_size=tuple(size) if isinstance(size, (list, tuple)) else (size, size),
            name=name,
            **kwargs,
        )

    @classmethod
    def from_pretrained(
        cls, id_or_path: str | Path, *, class_labels=None, revision: str | None = None, **kwargs
    ) -> ConsistencyPrior:
        """Load a diffusers consistency pipeline (folder or Hub id, e.g. ``openai/diffusers-cd_bedroom256_lpips``).

        ``sigma_min`` / ``sigma_max`` / ``sigma_data`` come from the ``CMStochasticIterativeScheduler`` config
        (0.002 / 80 / 0.5 when absent); ``kwargs`` override them and the other constructor arguments.
        """
        unet_dir, sched = locate_pipeline(id_or_path, revision=revision)
        name = kwargs.pop("name", None) or Path(str(id_or_path).rstrip("/")).name
        return cls._from_unet(load_unet(unet_dir), sched, name, class_labels=class_labels, **kwargs)

    @classmethod
    def from_openai(
        cls, path: str | Path, config: str | Mapping[str, Any] = "cm_lsun256", *, class_labels=None, **kwargs
    ) -> ConsistencyPrior:
        """Load an original OpenAI consistency checkpoint (``cd_bedroom256_lpips.pt``: ``"cm_lsun256"``;
        ``cd_imagenet64_lpips.pt``: ``"cm_imagenet64"``), converted with the flash/chunk QKV layout."""
        from zsir.priors.adm import load_openai_unet
        from zsir.priors.hub import url_file

        s = str(path)
        local = url_file(s) if s.startswith(("http://", "https://")) else Path(s)
        unet = load_openai_unet(local, config, qkv_layout=kwargs.pop("qkv_layout", None))
        name = kwargs.pop("name", None) or f"cm:{local.stem}"
        return cls._from_unet(unet, None, name, class_labels=class_labels, **kwargs)
