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

from zsir.models.convnets import ResUNet, ResUNetConfig, UnshuffleCNN, UnshuffleConfig
from zsir.models.ndr import NDRConfig, NDRRestore

__all__ = [
    "WEIGHTS_DIR",
    "BUILTIN_NAME",
    "ARCHITECTURES",
    "build_model",
    "model_from_meta",
    "load_shipped",
    "load_builtin_prior",
]

#: ``--arch`` name -> (class, config class, presets, default preset). The JSON of an export names the class.
ARCHITECTURES = {
    "ndr": (NDRRestore, NDRConfig, None, "lite-plain"),
    "unshuffle": (
        UnshuffleCNN,
        UnshuffleConfig,
        {"small": dict(width=64, depth=12), "ffdnet": dict(width=96, depth=12), "tiny": dict(width=8, depth=3)},
        "small",
    ),
    "unet": (
        ResUNet,
        ResUNetConfig,
        {
            "small": dict(widths=(16, 32, 64, 128), blocks=2),
            "wide": dict(widths=(24, 48, 96, 192), blocks=1),
            "tiny": dict(widths=(4, 8), blocks=1),
        },
        "small",
    ),
}


def build_model(arch: str, config: str | None = None, **overrides):
    """A freshly initialised denoiser: ``arch`` in :data:`ARCHITECTURES`, ``config`` one of its presets
    (default: the architecture's default preset), ``overrides`` replacing config fields."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch: expected one of {sorted(ARCHITECTURES)}, got {arch!r}")
    cls, cfg_cls, presets, default = ARCHITECTURES[arch]
    name = config or default
    if presets is None:
        return cls(cfg_cls.preset(name, **overrides))
    if name not in presets:
        raise ValueError(f"config: unknown preset {name!r} for arch {arch!r}; known: {sorted(presets)}")
    return cls(cfg_cls(**{**presets[name], **overrides}))


WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
BUILTIN_NAME = "builtin"


def model_from_meta(meta: dict, source: str = "config"):
    """A freshly built network from exported metadata ``{"arch": CLASS NAME, "config": {...}}``.

    Raises:
        ValueError: the architecture is unknown or the config does not fit it (the message names ``source``).
    """
    classes = {cls.__name__: (cls, cfg_cls) for cls, cfg_cls, *_ in ARCHITECTURES.values()}
    arch = meta.get("arch") if isinstance(meta, dict) else None
    if arch not in classes:
        raise ValueError(f"{source}: expected 'arch' to be one of {sorted(classes)}, got {arch!r}")
    cls, cfg_cls = classes[arch]
    try:
        return cls(cfg_cls.from_dict(meta["config"]))
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{source}: invalid {arch} config: {err}") from err


def load_shipped(name: str = BUILTIN_NAME, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
    """Load exported denoiser weights (``zsir/weights/<name>.safetensors`` + ``.json``) in eval mode.

    The JSON names the architecture (``"arch"``: ``NDRRestore``, ``UnshuffleCNN`` or ``ResUNet``) and its
    config; the network is built from them. ``name`` may also be a path prefix (``runs/x/export`` for
    ``export.safetensors`` + ``export.json``).

    Raises:
        FileNotFoundError: the weight or config file is missing (the message names both paths).
        ValueError: a file is unreadable or corrupt, the architecture is unknown, or the files do not match.
    """
    prefix = Path(name) if ("/" in name or "\\" in name) else WEIGHTS_DIR / name
    st, js = prefix.with_suffix(".safetensors"), prefix.with_suffix(".json")
    if not st.is_file() or not js.is_file():
        known = sorted(p.stem for p in WEIGHTS_DIR.glob("*.safetensors")) if WEIGHTS_DIR.is_dir() else []
        raise FileNotFoundError(f"name: {name!r} needs {st} and {js}; shipped weights: {known}")
    try:
        meta = json.loads(js.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{js}: not a valid JSON weights description ({err})") from err
    model = model_from_meta(meta, str(js))
    try:
        state = load_file(str(st))
    except Exception as err:  # safetensors raises its own error types for truncated / corrupt headers
        raise ValueError(f"{st}: not a readable safetensors file ({type(err).__name__}: {err})") from err
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        raise ValueError(
            f"{st}: does not match {js}; missing keys {missing[:8]}, unexpected keys {unexpected[:8]}, "
            f"wrong shapes {wrong[:8]}"
        )
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
