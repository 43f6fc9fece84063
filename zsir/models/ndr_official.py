"""Loading the authors' NDR-Restore checkpoint (``model_L.pth``, github.com/mdyao/NDR-Restore) into
:class:`~zsir.models.ndr.NDRRestore`: key aliases and ignored keys, and detection of the residual variant."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from zsir.models.ndr import NDRConfig, NDRRestore

__all__ = ["OFFICIAL_IGNORE_PATTERNS", "load_official"]

#: Official checkpoint keys that exist but are unused in the forward pass (``docs/priors/denoisers.md``).
OFFICIAL_IGNORE_PATTERNS = ("degradation_net.", ".fg_dwconv.", ".low_rank_transform2.")


def load_official(
    path: str | Path | Mapping[str, Tensor],
    residual: bool | str = "auto",
    probe: Tensor | None = None,
    config: NDRConfig | str = "official",
) -> NDRRestore:
    """Load the authors' ``model_L.pth`` (or any checkpoint in that layout) as a blind BGR restorer.

    Key handling (``docs/priors/denoisers.md``, "Loading the official checkpoint"):

    * a ``module.`` prefix is stripped; a ``{"state_dict": ...}`` / ``{"params": ...}`` wrapper is opened;
    * ``restoration_net.dr`` is an alias of ``degradation_representations`` (either may be present; if both
      are, they must be equal);
    * keys matching :data:`OFFICIAL_IGNORE_PATTERNS` (``degradation_net.*``, legacy ``*fg_dwconv*`` and
      ``*low_rank_transform2*``) are dropped; every other key must match exactly (``ValueError`` naming the
      file and the unexpected / missing keys).

    Residual variant (``docs/priors/denoisers.md``): the two variants share all keys, so with ``residual="auto"`` both
    are run on a synthetic sigma = 25/255 noisy image (``probe``, RGB in [0, 1]; default: a smooth seeded
    pattern) and the one with the higher PSNR is kept; it is recorded in ``model.config.residual``.

    Args:
        path: ``.pth`` file or an already loaded state dict.
        residual: ``True``, ``False`` or ``"auto"``.
        probe: optional clean RGB probe image ``(1, 3, H, W)`` for the detection.
        config: architecture of the checkpoint (default ``"official"``).
    """
    name = str(path) if not isinstance(path, Mapping) else "<state dict>"
    sd = torch.load(path, map_location="cpu", weights_only=True) if not isinstance(path, Mapping) else path
    for wrapper in ("state_dict", "params", "model"):
        if isinstance(sd, Mapping) and wrapper in sd and isinstance(sd[wrapper], Mapping):
            sd = sd[wrapper]
    if not isinstance(sd, Mapping):
        raise ValueError(f"{name}: expected a state dict (mapping of tensors), got {type(sd).__name__}")
    sd = {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in sd.items()}
    sd = {k: v for k, v in sd.items() if not any(p in k or k.startswith(p) for p in OFFICIAL_IGNORE_PATTERNS)}
    alias = sd.pop("restoration_net.dr", None)
    main = sd.get("degradation_representations")
    if alias is not None:
        if main is not None and not torch.equal(main, alias):
            raise ValueError(f"{name}: degradation_representations and its alias restoration_net.dr differ")
        sd["degradation_representations"] = alias
    cfg = NDRConfig.preset(config) if isinstance(config, str) else config
    cfg = replace(cfg, use_degrad=False, noise_map=False)
    variants = [residual] if isinstance(residual, bool) else [False, True]
    if not isinstance(residual, bool) and residual != "auto":
        raise ValueError(f"residual: expected True, False or 'auto', got {residual!r}")
    models = []
    for res in variants:
        model = NDRRestore(replace(cfg, residual=res))
        expected = set(model.state_dict())
        missing, unexpected = sorted(expected - set(sd)), sorted(set(sd) - expected)
        if missing or unexpected:
            raise ValueError(
                f"{name}: state dict does not match the NDR-Restore '{config}' layout; "
                f"unexpected keys {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''} "
                f"({len(unexpected)}), missing keys {missing[:10]}{' ...' if len(missing) > 10 else ''} "
                f"({len(missing)}); ignored patterns: {list(OFFICIAL_IGNORE_PATTERNS)}"
            )
        model.load_state_dict(sd, strict=True)
        model.bgr = True
        models.append(model.eval())
    if len(models) == 1:
        return models[0]
    scores = [_probe_psnr(m, probe) for m in models]
    best = models[int(scores[1] > scores[0])]
    best.config.extra["residual_probe_psnr"] = {"False": scores[0], "True": scores[1]}
    return best


def _probe_image(size: int = 64) -> Tensor:
    """A smooth seeded RGB test pattern in [0, 1] (used when no probe image is given)."""
    g = torch.Generator().manual_seed(0)
    low = torch.rand(1, 3, size // 8, size // 8, generator=g)
    img = F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    img = 0.6 * img + 0.4 * (0.5 + 0.5 * torch.sin(6 * math.pi * xx * yy))[None, None]
    return img.clamp(0, 1)


@torch.no_grad()
def _probe_psnr(model: NDRRestore, probe: Tensor | None) -> float:
    clean = _probe_image() if probe is None else probe.to(torch.float32)
    g = torch.Generator().manual_seed(25)
    noisy = (clean + 25 / 255 * torch.randn(clean.shape, generator=g)).clamp(0, 1)
    from zsir.metrics import psnr

    return float(psnr(model.restore(noisy).clamp(0, 1), clean).mean())
