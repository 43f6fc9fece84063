"""``zsir.solve``: one call from a measurement to a restoration."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from numbers import Integral, Real
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
        pd_anchor: name of the tuned preset that anchored ``pd`` (its pd 0 end, :mod:`zsir.samplers.pd`), or
            ``None`` (no pd, an explicit preset, no task, or no tuned preset for this sampler, prior and task).
    """

    x: Tensor
    samples: Tensor
    nfe: int
    seconds: float
    sampler: str
    steps: int
    params: dict[str, Any] = field(default_factory=dict)
    tiling: dict[str, Any] = field(default_factory=dict)
    pd_anchor: str | None = None


def resolve_params(sampler_cls, preset, pd: float | None, overrides: dict[str, Any], *, anchor=None) -> dict[str, Any]:
    """Merge hyperparameters: class defaults < preset < pd mapping < explicit keyword arguments.

    ``preset`` is ``None``, the name of one of ``sampler_cls.presets`` or a :class:`~zsir.samplers.Preset` (e.g.
    ``zsir.tune.load_presets(path)[name].preset``), whose parameters are checked against the sampler's schema.
    ``anchor`` (a :class:`zsir.samplers.pd.Anchor`, see :func:`zsir.samplers.pd.find_anchor`) makes ``pd`` move
    from that tuned preset (pd 0, its ``steps`` included) to the sampler's perceptual end (pd 1); without it ``pd``
    uses the sampler's generic mapping ``sampler_cls.pd_params``. A preset's ``steps`` wins over the anchor's.
    """
    from zsir.samplers import pd as pd_knob
    from zsir.samplers.base import Preset

    params: dict[str, Any] = {}
    steps = None
    if preset is not None:
        if isinstance(preset, Preset):
            p = sampler_cls.check_params(dict(preset.params))
        elif isinstance(preset, str):
            p = dict(sampler_cls.preset(preset).params)
        else:
            raise TypeError(f"preset: expected a preset name or a zsir.samplers.Preset, got {type(preset).__name__}")
        steps = p.pop("steps", None)
        params.update(p)
    if pd is not None:
        params.update(pd_knob.pd_params(sampler_cls, pd, anchor))
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


def _check_arguments(
    y: Tensor,
    sigma_y: Any,
    pd: Any,
    steps: Any,
    preset: Any,
    num_samples: Any,
    generator: Any,
    progress: Any,
    return_result: Any,
) -> None:
    """Type and range checks of :func:`solve`'s plain arguments, each error naming its argument."""
    from zsir.samplers.base import Preset

    _check_image(y, "y")
    if not (sigma_y is None or isinstance(sigma_y, (Real, Tensor)) or _numbers(sigma_y)):
        raise TypeError(f"sigma_y: expected a float, one float per sample, a tensor or None, got {sigma_y!r}")
    if pd is not None and (not isinstance(pd, Real) or isinstance(pd, bool) or not 0.0 <= pd <= 1.0):
        raise ValueError(f"pd: expected a number in [0, 1] (0 = faithful, 1 = perceptual) or None, got {pd!r}")
    if steps is not None and (not isinstance(steps, Integral) or isinstance(steps, bool) or steps < 1):
        raise ValueError(f"steps: expected a positive integer or None, got {steps!r}")
    if preset is not None and not isinstance(preset, (str, Preset)):
        raise TypeError(f"preset: expected a preset name (str), a zsir.samplers.Preset or None, got {preset!r}")
    if not isinstance(num_samples, Integral) or isinstance(num_samples, bool) or num_samples < 1:
        raise ValueError(f"num_samples: expected a positive integer, got {num_samples!r}")
    if isinstance(generator, bool) or not (generator is None or isinstance(generator, (Integral, torch.Generator))):
        raise TypeError(
            f"generator: expected an integer seed, a torch.Generator or None, got {type(generator).__name__} "
            f"{generator!r}"
        )
    if isinstance(generator, Integral) and not -(2**63) <= generator < 2**64:
        raise ValueError(f"generator: an integer seed must lie in [-2**63, 2**64), got {generator}")
    if isinstance(generator, torch.Generator) and generator.device.type != y.device.type:
        raise ValueError(
            f"generator: a torch.Generator on {generator.device} cannot draw noise for y on {y.device}; create it "
            f"with torch.Generator(device={str(y.device)!r}) or pass an integer seed"
        )
    for name, flag in (("progress", progress), ("return_result", return_result)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name}: expected True or False, got {flag!r}")


def _check_task(task: Any):
    """``task`` as a :class:`~zsir.tasks.Task` (or ``None``); an unknown name raises ValueError naming ``task``."""
    from zsir.tasks import Task, parse_task

    if task is None or isinstance(task, Task):
        return task
    if not isinstance(task, str):
        raise TypeError(f"task: expected a task name such as 'sr4', a zsir.tasks.Task or None, got {task!r}")
    return parse_task(task)


def _numbers(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and all(isinstance(u, Real) and not isinstance(u, bool) for u in v)


def _check_range(y: Tensor, ones: Tensor, sigma: Tensor) -> None:
    """Reject measurements far outside what ``operator`` can produce from images in [0, 1] plus the noise.

    For ``y = A x + n`` with ``x`` in [0, 1], ``|y|`` stays near ``max|A(1)|`` (exactly below it for operators
    with non-negative weights; slightly above for bicubic's negative lobes) plus a few ``sigma_y``. Values beyond
    ``4 max(1, max|A(1)|) + 6 max(sigma_y) + 1`` cannot come from a [0, 1] image: typically 0-255 pixel values.
    """
    scale = max(1.0, float(ones.abs().max()))
    limit = 4.0 * scale + 6.0 * float(sigma.max()) + 1.0
    peak = float(y.abs().max())
    if peak > limit:
        hint = "0-255 pixel values? divide y by 255" if peak > 20 * scale else "is y scaled differently?"
        raise ValueError(
            f"y: values up to {peak:.4g} in magnitude, far outside what this operator produces from images in "
            f"[0, 1] (about |y| <= {scale:.3g} plus noise; the limit is {limit:.3g}); {hint}. zsir expects "
            "images and measurements in [0, 1] units"
        )


def solve(
    y: Tensor,
    operator: LinearOperator,
    sampler: str | type = "rdmd",
    prior: Prior | str | None = None,
    sigma_y: float | Tensor | None = None,
    pd: float | None = None,
    steps: int | None = None,
    preset: str | Any = None,
    num_samples: int = 1,
    generator: torch.Generator | int | None = None,
    progress: bool = True,
    return_result: bool = False,
    tile: int | None = None,
    tile_overlap: int | None = None,
    max_memory: float | None = None,
    task: str | Any = None,
    **hyperparameters,
) -> Tensor | SolveResult:
    r"""Restore images from linear measurements ``y = A x + n`` with a zero-shot sampler.

    Args:
        y: measurements ``(B, C', H', W')`` of images in [0, 1] (as produced by ``operator.A`` plus noise).
        operator: the :class:`~zsir.operators.LinearOperator` ``A``.
        sampler: registry name (``"rdmd"``, ``"cm4ir"``, ``"ddrm"``, ``"ddnm"``, ``"diffpir"``, ``"dps"``,
            ``"pnp"``) or a :class:`~zsir.samplers.Sampler` subclass.
        prior: a :class:`~zsir.priors.Prior`, a name for :func:`~zsir.priors.load_prior`, or ``None`` for the built-in
            prior.
        sigma_y: std of the Gaussian measurement noise in **[0, 1] image units**, a float or one value per
            sample; ``None`` means noiseless (0).
        pd: perception-distortion position in [0, 1]: 0 = lowest distortion, 1 = most perceptual
            (:mod:`zsir.samplers.pd`). With ``task`` and a preset tuned for this sampler, prior and task, pd 0 is
            that preset and pd 1 the sampler's perceptual end on top of it; otherwise the sampler's generic
            mapping (see the README table). With an explicit ``preset``, the generic mapping applies on top of it.
        steps: iterations (``None``: the preset's or the sampler's default).
        preset: a named setting of the sampler (see ``Sampler.presets``: the published ones and the ``tuned-*``
            presets for the built-in prior), or a :class:`~zsir.samplers.Preset` read from a preset file
            (:func:`zsir.tune.load_presets`).
        num_samples: posterior samples per measurement.
        generator: a ``torch.Generator`` or an integer seed; the same seed gives the same output.
        progress: show a progress bar with the NFE count.
        return_result: return a :class:`SolveResult` instead of the tensor.
        tile: side in pixels of the tiles the prior denoises (a multiple of ``prior.multiple``); ``None`` = the
            prior's default (its training size for fixed-size networks, 512 for fully convolutional ones, which
            shrink to fit ``max_memory`` only when it is given), ``0`` = no tiling.
        tile_overlap: minimum overlap of neighbouring tiles in pixels (``None``: ``tile // 8``).
        max_memory: peak memory budget in **GB** (1e9 bytes). ``None``: the default tile whatever the machine's
            load (so the output never depends on it), checked against the memory available on the device now.
            The peak is estimated before any work (:mod:`zsir.memory`); a request that cannot fit raises
            :class:`zsir.memory.MemoryBudgetError` naming the estimate and the options that fit.
        task: the task name of :mod:`zsir.tasks` (``"sr4"``, ``"deblur-gauss"``, ...) that ``operator`` stands for,
            or a :class:`~zsir.tasks.Task`; only used to find the tuned preset that anchors ``pd``
            (``SolveResult.pd_anchor`` names it). An unknown name raises ValueError before any work.
        **hyperparameters: the sampler's own parameters (paper symbols, e.g. ``tau``, ``lambda_``, ``zeta``),
            checked against the sampler's ``schema`` before any work: an unknown name, a wrong type or a value out
            of range raises ValueError naming the sampler, the parameter and the valid range.

    Returns:
        the restored batch ``(B, C, H, W)`` in [0, 1], or a :class:`SolveResult`.
    """
    from zsir.samplers import SAMPLERS, Sampler

    _check_arguments(y, sigma_y, pd, steps, preset, num_samples, generator, progress, return_result)
    task = _check_task(task)
    if not isinstance(operator, LinearOperator):
        raise TypeError(f"operator: expected a zsir.operators.LinearOperator, got {type(operator).__name__}")
    x_shape = operator.x_shape(tuple(y.shape))
    B = y.shape[0]
    sigma = units.as_sigma(
        0.0 if sigma_y is None else sigma_y, B, device=y.device, dtype=y.dtype, name="sigma_y", low=0.0, high=1.0
    )
    operator = operator.to(y.device)
    ones = operator.ones_image(x_shape, device=y.device, dtype=y.dtype)
    _check_range(y, ones, sigma)

    if isinstance(sampler, str):
        sampler_cls = SAMPLERS.get(sampler)
    elif isinstance(sampler, type) and issubclass(sampler, Sampler):
        sampler_cls = sampler
    else:
        raise TypeError(f"sampler: expected a name or a Sampler subclass, got {sampler!r}")

    anchor = None
    if pd is not None and preset is None:
        from zsir.samplers.pd import find_anchor

        anchor = find_anchor(sampler_cls, prior, task, float(sigma.mean()))
    params = resolve_params(sampler_cls, preset, pd, hyperparameters, anchor=anchor)
    steps = params.pop("steps", None) if steps is None else steps
    params.pop("steps", None)
    params = sampler_cls.check_params(params)  # types and ranges, before the prior is loaded

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
    if float(units.sigma_to_model(sigma).max()) > prior.sigma_max:  # a limited-range prior (a denoiser)
        warnings.warn(
            f"sigma_y: {float(sigma.max()):.4g} ([0, 1] units) is above the noise range of the prior {prior.name!r} "
            f"(up to {units.sigma_to_image(prior.sigma_max):.4g}): samplers start at that level, and noise above it "
            "stays in the restoration; use a prior that covers sigma_y (e.g. 'builtin')",
            stacklevel=2,
        )

    if isinstance(generator, Integral):
        generator = torch.Generator(device=y.device).manual_seed(int(generator))
    elif generator is None:
        generator = torch.Generator(device=y.device)
        generator.seed()

    algo = sampler_cls(prior, steps=steps, progress=progress, **params)
    mem = memory.plan(
        prior, sampler_cls, operator, x_shape, num_samples, tile=tile, overlap=tile_overlap, max_memory=max_memory,
        device=y.device,
    )  # fmt: skip

    y_model = units.measurement_to_model(y, ones)
    del ones  # at photo size each measurement-sized copy counts (12 MP deblurring: 144 MB)
    sigma_model = units.sigma_to_model(sigma)
    K = num_samples
    y_rep = y_model.repeat(K, *([1] * (y.dim() - 1))) if K > 1 else y_model
    del y_model
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
        pd_anchor=None if anchor is None else anchor.name,
    )
