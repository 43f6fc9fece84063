"""``zsir.solve``: one call from a measurement to a restoration."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from zsir import memory, units
from zsir.operators.base import LinearOperator
from zsir.priors.base import Prior

__all__ = ["solve", "SolveResult", "resolve_params"]


@dataclass
class SolveResult:
    """Everything :func:`solve` knows after a run.

    Attributes:
        x: the restoration, ``(B, C, H, W)`` in [0, 1] (the first of the samples).
        samples: all samples, ``(num_samples, B, C, H, W)`` in [0, 1].
        nfe: prior network calls per sample batch (one call processes the whole batch).
        seconds: wall time of the sampler.
        sampler: registry name of the sampler.
        params: every hyperparameter used, after preset, pd mapping and explicit overrides.
        tiling: the tiling and memory plan used (:meth:`zsir.memory.TilingPlan.as_dict`: tile, overlap,
            tiles_per_call (at most, over the grid shifts), estimate and budget in bytes and GB, budget_source).
    """

    x: Tensor
    samples: Tensor
    nfe: int
    seconds: float
    sampler: str
    steps: int
    params: dict[str, Any] = field(default_factory=dict)
    tiling: dict[str, Any] = field(default_factory=dict)


def resolve_params(sampler_cls, preset: str | None, pd: float | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """Merge hyperparameters: class defaults < preset < pd mapping < explicit keyword arguments."""
    params: dict[str, Any] = {}
    steps = None
    if preset is not None:
        p = dict(sampler_cls.preset(preset).params)
        steps = p.pop("steps", None)
        params.update(p)
    if pd is not None:
        pd = float(pd)
        if not 0.0 <= pd <= 1.0 or pd != pd:
            raise ValueError(f"pd: expected a number in [0, 1] (0 = faithful, 1 = perceptual), got {pd}")
        params.update(sampler_cls.pd_params(pd))
    params.update(overrides)
    if steps is not None:
        params["steps"] = steps
    return params


def _check_image(y: Tensor, name: str) -> None:
    if not isinstance(y, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of shape (B, C, H, W), got {type(y).__name__}")
    if y.dim() != 4:
        raise ValueError(f"{name}: expected shape (B, C, H, W), got {tuple(y.shape)}")
    if not y.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor with values in [0, 1], got dtype {y.dtype}")
    if not torch.isfinite(y).all():
        raise ValueError(f"{name}: contains NaN or inf values")


def solve(
    y: Tensor,
    operator: LinearOperator,
    sampler: str | type = "rdmd",
    prior: Prior | str | None = None,
    sigma_y: float | Tensor | None = None,
    pd: float | None = None,
    steps: int | None = None,
    preset: str | None = None,
    num_samples: int = 1,
    generator: torch.Generator | int | None = None,
    progress: bool = True,
    return_result: bool = False,
    tile: int | None = None,
    tile_overlap: int | None = None,
    max_memory: float | None = None,
    **hyperparameters,
) -> Tensor | SolveResult:
    r"""Restore images from linear measurements ``y = A x + n`` with a zero-shot sampler.

    Args:
        y: measurements ``(B, C', H', W')`` of images in [0, 1] (as produced by ``operator.A`` plus noise).
        operator: the :class:`~zsir.operators.LinearOperator` ``A``.
        sampler: registry name (``"rdmd"``, ``"cm4ir"``, ``"ddrm"``, ``"ddnm"``, ``"diffpir"``, ``"dps"``,
            ``"pnp"``) or a :class:`~zsir.samplers.Sampler` subclass.
        prior: a :class:`~zsir.priors.Prior`, a name for :func:`zsir.load_prior`, or ``None`` for the built-in
            prior.
        sigma_y: std of the Gaussian measurement noise in **[0, 1] image units**, a float or one value per
            sample; ``None`` means noiseless (0).
        pd: perception-distortion position in [0, 1]: 0 = lowest distortion, 1 = most perceptual; mapped to the
            sampler's own parameter (see the README table).
        steps: iterations (``None``: the preset's or the sampler's default).
        preset: a named published setting of the sampler (see ``Sampler.presets``).
        num_samples: posterior samples per measurement.
        generator: a ``torch.Generator`` or an integer seed; the same seed gives the same output.
        progress: show a progress bar with the NFE count.
        return_result: return a :class:`SolveResult` instead of the tensor.
        tile: side in pixels of the tiles the prior denoises (a multiple of ``prior.multiple``); ``None`` = the
            prior's default (its training size for fixed-size networks, 512 for fully convolutional ones,
            shrunk to fit ``max_memory``), ``0`` = no tiling.
        tile_overlap: minimum overlap of neighbouring tiles in pixels (``None``: ``tile // 8``).
        max_memory: peak memory budget in **GB** (1e9 bytes); ``None`` = the memory available on the device.
            The peak is estimated before any work (:mod:`zsir.memory`); a request that cannot fit raises
            :class:`zsir.memory.MemoryBudgetError` naming the estimate and the options that fit.
        **hyperparameters: the sampler's own parameters (paper symbols, e.g. ``tau``, ``lambda_``, ``zeta``).

    Returns:
        the restored batch ``(B, C, H, W)`` in [0, 1], or a :class:`SolveResult`.
    """
    from zsir.samplers import SAMPLERS, Sampler

    _check_image(y, "y")
    if not isinstance(operator, LinearOperator):
        raise TypeError(f"operator: expected a zsir.operators.LinearOperator, got {type(operator).__name__}")
    x_shape = operator.x_shape(tuple(y.shape))
    B = y.shape[0]
    sigma = units.as_sigma(
        0.0 if sigma_y is None else sigma_y, B, device=y.device, dtype=y.dtype, name="sigma_y", low=0.0, high=1.0
    )
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples: expected a positive integer, got {num_samples!r}")

    if isinstance(sampler, str):
        sampler_cls = SAMPLERS.get(sampler)
    elif isinstance(sampler, type) and issubclass(sampler, Sampler):
        sampler_cls = sampler
    else:
        raise TypeError(f"sampler: expected a name or a Sampler subclass, got {sampler!r}")

    if prior is None or isinstance(prior, str):
        from zsir.priors import load_prior

        prior = load_prior(prior or "builtin")
    if not isinstance(prior, Prior):
        raise TypeError(f"prior: expected a zsir.priors.Prior or a name, got {type(prior).__name__}")
    prior = prior.to(y.device)
    if x_shape[1] != prior.channels:
        raise ValueError(
            f"y: the operator maps {x_shape[1]}-channel images but the prior models {prior.channels} channels"
        )

    if isinstance(generator, int):
        generator = torch.Generator(device=y.device).manual_seed(generator)
    elif generator is None:
        generator = torch.Generator(device=y.device)
        generator.seed()

    params = resolve_params(sampler_cls, preset, pd, hyperparameters)
    steps = params.pop("steps", None) if steps is None else steps
    params.pop("steps", None)
    algo = sampler_cls(prior, steps=steps, progress=progress, **params)
    mem = memory.plan(
        prior, sampler_cls, operator, x_shape, num_samples, tile=tile, overlap=tile_overlap, max_memory=max_memory,
        device=y.device,
    )  # fmt: skip

    operator = operator.to(y.device)
    ones = operator.ones_image(x_shape, device=y.device, dtype=y.dtype)
    y_model = units.measurement_to_model(y, ones)
    sigma_model = units.sigma_to_model(sigma)
    K = num_samples
    y_rep = y_model.repeat(K, *([1] * (y.dim() - 1)))
    s_rep = sigma_model.repeat(K, 1, 1, 1)

    t0 = time.perf_counter()
    with prior.use_tiling(mem.tile, mem.overlap):
        out = algo(y_rep, operator, s_rep, generator)
    seconds = time.perf_counter() - t0
    samples = units.model_to_image(out).clamp(0.0, 1.0).reshape(K, B, *out.shape[1:])
    if not return_result:
        return samples[0]
    return SolveResult(
        x=samples[0],
        samples=samples,
        nfe=algo.nfe,
        seconds=seconds,
        sampler=sampler_cls.name,
        steps=algo.steps,
        params=dict(algo.params),
        tiling=mem.as_dict(),
    )
