"""The built-in prior: a small non-blind NDR-Restore denoiser shipped inside the package (no download).

``zsir/weights/<name>.safetensors`` holds the inference weights (NDR dictionary + restorer) and
``zsir/weights/<name>.json`` the architecture (:class:`~zsir.models.ndr.NDRConfig`), ``sigma_max`` and how it
was trained (steps, wall time, data). :func:`load_builtin_prior` wraps it as a :class:`~zsir.priors.base.Prior`
through :class:`~zsir.priors.denoiser.DenoiserPrior`, so samplers see the usual [-1, 1] VE interface.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from zsir.models.ndr import NDRConfig, NDRRestore

__all__ = ["WEIGHTS_DIR", "BUILTIN_NAME", "load_shipped", "load_builtin_prior"]

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
BUILTIN_NAME = "builtin"


def load_shipped(
    name: str = BUILTIN_NAME, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> NDRRestore:
    """Load shipped NDR-Restore weights (``zsir/weights/<name>.safetensors`` + ``.json``) in eval mode.

    ``name`` may also be a path prefix (``runs/x/export`` for ``export.safetensors`` + ``export.json``).

    Raises:
        FileNotFoundError: the weight or config file is missing (the message names both paths).
        ValueError: the files do not match each other.
    """
    prefix = Path(name) if ("/" in name or "\\" in name) else WEIGHTS_DIR / name
    st, js = prefix.with_suffix(".safetensors"), prefix.with_suffix(".json")
    if not st.is_file() or not js.is_file():
        known = sorted(p.stem for p in WEIGHTS_DIR.glob("*.safetensors")) if WEIGHTS_DIR.is_dir() else []
        raise FileNotFoundError(f"name: {name!r} needs {st} and {js}; shipped weights: {known}")
    meta = json.loads(js.read_text())
    if meta.get("arch") != "NDRRestore":
        raise ValueError(f"{js}: expected arch 'NDRRestore', got {meta.get('arch')!r}")
    model = NDRRestore(NDRConfig.from_dict(meta["config"]))
    state = load_file(str(st))
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(f"{st}: does not match {js}; missing keys {missing[:8]}, unexpected keys {unexpected[:8]}")
    model.load_state_dict(state)
    model.train_info = meta.get("training", {})
    model.requires_grad_(False)
    return model.to(device=device, dtype=dtype).eval()


def load_builtin_prior(
    device: torch.device | str | None = None, dtype: torch.dtype | None = None, name: str = BUILTIN_NAME
):
    """The shipped denoiser as a :class:`~zsir.priors.base.Prior` (``kind="mmse"``).

    The network is a Gaussian denoiser ``D(x, sigma)`` trained on unclipped noise for ``sigma`` in
    ``[0, sigma_max]`` ([0, 1] units; ``sigma_max`` is read from the JSON config, 1.0 for the shipped model, i.e.
    2.0 in [-1, 1] model units). Inputs are reflect-padded to a multiple of ``config.multiple``.

    Args:
        device, dtype: where to put the weights (default CPU float32).
        name: shipped weight name (``"builtin"``; ``"ndr_lite"`` if present) or a path prefix.
    """
    from zsir.priors.denoiser import DenoiserPrior

    net = load_shipped(name, device=device, dtype=dtype)
    return DenoiserPrior(net, sigma_max=net.config.sigma_max, multiple=net.config.multiple, name=f"zsir-{name}")
