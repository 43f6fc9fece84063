"""Diffusers ``UNet2DModel`` + scheduler folders and Hub repositories as priors.

:func:`locate_pipeline` finds (downloading from the Hub when needed) the UNet folder and scheduler config of

* a pipeline folder or Hub id (``model_index.json`` with ``unet/`` and ``scheduler/`` sub-folders, e.g.
  ``openai/diffusers-cd_bedroom256_lpips``),
* a flat pipeline folder or Hub id (``model_index.json``, the UNet's ``config.json`` and weights and
  ``scheduler_config.json`` all at the root, e.g. the current revision of ``google/ddpm-ema-celebahq-256``):
  like diffusers' own pipelines, zsir falls back to the root when there is no ``unet/`` sub-folder, or
* a bare ``UNet2DModel`` folder (``config.json`` + weights) with a ``scheduler_config.json`` beside it.

:func:`load_unet` builds the ``UNet2DModel`` strictly from its config and weights (safetensors preferred), so a
truncated file or a mismatching state dict raises :class:`~zsir.priors.hub.CheckpointError` naming the file.
``diffusers`` is imported inside the functions so ``import zsir`` stays fast.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from zsir.priors.diffusion import DiscreteVPPrior, unet_multiple
from zsir.priors.hub import check_state_dict, hub_file, read_state_dict

__all__ = ["DiffusersPrior", "locate_pipeline", "load_unet", "load_scheduler", "is_hub_id"]

_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_hub_id(name: str) -> bool:
    """``True`` for ``"org/name"`` strings (a Hugging Face Hub repository id)."""
    return bool(_HUB_ID.match(name))


def _first_existing(*paths: Path) -> Path | None:
    return next((p for p in paths if p.is_file()), None)


def _hub_first(repo_id: str, names: tuple[str, ...], revision: str | None) -> Path | None:
    """The first of ``names`` that the Hub repository has (downloaded), or None if it has none of them."""
    for name in names:
        try:
            return hub_file(repo_id, name, revision=revision)
        except FileNotFoundError:
            continue
    return None


def _download_pipeline(repo_id: str, revision: str | None) -> tuple[Path, Path | None]:
    """Download only what a prior needs: configs and one UNet weights file (safetensors if the repo has it).

    A pipeline repository keeps the UNet in ``unet/``; a flat one (and a bare UNet repository) at the root.
    """
    pipeline = _hub_first(repo_id, ("model_index.json",), revision) is not None
    config = _hub_first(repo_id, ("unet/config.json",) if pipeline else (), revision)
    unet_sub = "unet/" if config is not None else ""
    if config is None:
        config = hub_file(repo_id, "config.json", revision=revision)
    unet_dir = config.parent
    if _hub_first(repo_id, tuple(unet_sub + n for n in _WEIGHTS[:-1]), revision) is None:
        hub_file(repo_id, unet_sub + _WEIGHTS[-1], revision=revision)
    return unet_dir, _hub_first(repo_id, ("scheduler/scheduler_config.json", "scheduler_config.json"), revision)


def locate_pipeline(id_or_path: str | Path, *, revision: str | None = None) -> tuple[Path, dict[str, Any] | None]:
    """``(unet_folder, scheduler_config or None)`` for a local folder or a Hub id (see module docstring).

    Raises:
        FileNotFoundError: a local path without a UNet config, or a Hub id without one.
        zsir.priors.hub.PriorDownloadError: a Hub file is not cached and cannot be downloaded.
    """
    path = Path(id_or_path).expanduser()
    if path.is_dir():
        unet_dir = path / "unet" if (path / "unet" / "config.json").is_file() else path
        scheduler = _first_existing(
            path / "scheduler" / "scheduler_config.json",
            path / "scheduler_config.json",
            *([path.parent / "scheduler" / "scheduler_config.json"] if unet_dir == path else []),
        )
        if not (unet_dir / "config.json").is_file():
            raise FileNotFoundError(
                f"{str(path)!r}: expected a diffusers pipeline folder (model_index.json, unet/config.json, "
                "scheduler/scheduler_config.json), a flat pipeline folder (model_index.json, config.json, weights "
                "and scheduler_config.json at the root) or a UNet2DModel folder (config.json + weights)"
            )
    elif is_hub_id(str(id_or_path)):
        unet_dir, scheduler = _download_pipeline(str(id_or_path), revision)
    else:
        raise FileNotFoundError(f"{str(id_or_path)!r} is neither an existing folder nor a Hub id ('org/name')")
    return unet_dir, (json.loads(scheduler.read_text()) if scheduler is not None else None)


def load_unet(unet_dir: str | Path, *, dtype: torch.dtype | None = None) -> nn.Module:
    """Build a ``UNet2DModel`` from ``unet_dir/config.json`` and its weights, strictly.

    Raises:
        ValueError: the config is not a ``UNet2DModel`` (e.g. a text-conditioned ``UNet2DConditionModel``).
        zsir.priors.hub.CheckpointError: the weights are corrupt or do not fit the config.
    """
    from diffusers import UNet2DModel

    unet_dir = Path(unet_dir)
    config = json.loads((unet_dir / "config.json").read_text())
    cls = config.get("_class_name", "UNet2DModel")
    if cls != "UNet2DModel":
        raise ValueError(
            f"{str(unet_dir)!r}: expected a UNet2DModel, got {cls} (only unconditional or "
            "class-conditional image UNets are supported)"
        )
    weights = _first_existing(*(unet_dir / n for n in _WEIGHTS))
    if weights is None:
        raise FileNotFoundError(f"{str(unet_dir)!r} holds no {' or '.join(_WEIGHTS)}")
    state = read_state_dict(weights)
    with torch.device("meta"):
        unet = UNet2DModel.from_config(config)
    check_state_dict(state, unet, str(weights))
    unet.load_state_dict(state, assign=True)
    return unet.to(dtype) if dtype is not None else unet


def load_scheduler(config: dict[str, Any]):
    """Instantiate the diffusers scheduler class named in a ``scheduler_config.json`` dict."""
    import diffusers

    name = config.get("_class_name", "DDPMScheduler")
    cls = getattr(diffusers, name, None)
    if cls is None:
        raise ValueError(f"unknown scheduler class {name!r} (not in diffusers {diffusers.__version__})")
    return cls.from_config(config)


class DiffusersPrior(DiscreteVPPrior):
    """A diffusers discrete-time diffusion UNet (DDPM / DDIM / PNDM scheduler) as a VE denoiser.

    See :class:`~zsir.priors.diffusion.DiscreteVPPrior` for the maths; only the scheduler's ``alphas_cumprod``
    and ``prediction_type`` are used.
    """

    @classmethod
    def from_pretrained(
        cls,
        id_or_path: str | Path,
        *,
        revision: str | None = None,
        alphas_cumprod: Tensor | None = None,
        prediction_type: str | None = None,
        clip: bool = True,
        name: str | None = None,
    ) -> DiffusersPrior:
        """Load a pipeline folder / Hub id or a ``UNet2DModel`` folder (see module docstring).

        Args:
            id_or_path: local folder or Hub id.
            revision: Hub revision (branch, tag or commit).
            alphas_cumprod, prediction_type: override (or supply, when there is no scheduler config) the
                scheduler's values.
            clip: clamp x0 estimates to [-1, 1].
            name: display name (default: the folder / repository name).
        """
        unet_dir, sched_cfg = locate_pipeline(id_or_path, revision=revision)
        if sched_cfg is not None and sched_cfg.get("_class_name") == "CMStochasticIterativeScheduler":
            raise ValueError(f"{str(id_or_path)!r} is a consistency model; load it with ConsistencyPrior")
        if alphas_cumprod is None or prediction_type is None:
            if sched_cfg is None:
                raise ValueError(
                    f"{str(id_or_path)!r} has no scheduler config (scheduler_config.json); pass alphas_cumprod= "
                    "and prediction_type="
                )
            scheduler = load_scheduler(sched_cfg)
            alphas_cumprod = scheduler.alphas_cumprod if alphas_cumprod is None else alphas_cumprod
            prediction_type = prediction_type or scheduler.config.get("prediction_type", "epsilon")
        unet = load_unet(unet_dir)
        size = unet.config.sample_size
        return cls(
            unet,
            alphas_cumprod,
            prediction_type,
            clip=clip,
            channels=unet.config.in_channels,
            multiple=unet_multiple(unet),
            train_size=tuple(size) if isinstance(size, (list, tuple)) else (size, size),
            name=name or Path(str(id_or_path).rstrip("/")).name,
        )
