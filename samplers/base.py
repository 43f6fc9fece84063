r"""The sampler contract, the sampler registry, and the NFE-counting progress bar.

A sampler receives everything in the **model convention** (see :mod:`zsir.units`): the measurement ``y`` of the
[-1, 1] image, the per-sample noise std ``sigma_y`` in [-1, 1] units, shape ``(B, 1, 1, 1)``, and returns the
restored batch in [-1, 1]. :func:`zsir.solve` does the conversion from and to [0, 1] once.

Writing a sampler::

    @register_sampler("mine")
    class Mine(Sampler):
        default_steps = 20
        schema = Schema(Param("eta", float, 0.5, "fresh-noise share", low=0.0, high=1.0, search=(0.0, 1.0)))
        presets = {"paper": Preset("Mine et al. 2025, Table 1", {"eta": 0.3})}

        @classmethod
        def pd_params(cls, pd):               # pd in [0, 1]: 0 = faithful, 1 = perceptual
            return {"eta": pd}

        def run(self, y, operator, sigma_y, generator):
            x = ...
            x0 = self.denoise(x, sigma)       # counts one NFE and advances the bar
            ...
            return x
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from zsir.operators.base import LinearOperator
from zsir.priors.base import Prior
from zsir.registry import Registry
from zsir.samplers import schedules
from zsir.samplers.params import Param, Schema

__all__ = [
    "Sampler", "DiffusionSampler", "Param", "Preset", "Schema", "SAMPLERS", "register_sampler", "randn",
    "normal_tensors",
]  # fmt: skip

SAMPLERS: Registry[type[Sampler]] = Registry("sampler")
register_sampler = SAMPLERS.register


@dataclass(frozen=True)
class Preset:
    """A named set of hyperparameters; ``description`` says which paper/table/setting it reproduces."""

    description: str
    params: dict[str, Any] = field(default_factory=dict)


def randn(shape: Sequence[int], generator: torch.Generator | None, like: Tensor) -> Tensor:
    """Standard normal noise of ``shape`` on ``like``'s device and dtype, drawn from ``generator``.

    The generator may live on another device than ``like`` (e.g. a CPU generator for CUDA tensors); the noise is
    then drawn on the generator's device and moved.
    """
    gdev = generator.device if generator is not None else like.device
    z = torch.randn(tuple(shape), generator=generator, device=gdev, dtype=torch.float32)
    return z.to(device=like.device, dtype=like.dtype)


def normal_tensors(*modules: nn.Module) -> None:
    """Replace the inference tensors (made under :func:`torch.inference_mode`) that ``modules`` and their
    submodules hold in attributes, also inside dicts, lists and tuples (operator caches), by normal clones.

    Autograd cannot save inference tensors, so a cache an operator built during an inference-mode run would
    break a later differentiating run (DPS) with the same operator; the clone has the same values.
    """

    def fix(obj):
        if isinstance(obj, Tensor):
            return obj.clone() if obj.is_inference() else obj
        if isinstance(obj, dict):
            for k, v in obj.items():
                obj[k] = fix(v)
            return obj
        if isinstance(obj, list):
            obj[:] = [fix(v) for v in obj]
            return obj
        if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
            new = tuple(fix(v) for v in obj)
            return obj if all(a is b for a, b in zip(new, obj, strict=True)) else new
        return obj

    for module in modules:
        for m in module.modules():
            for name, value in list(vars(m).items()):
                if name in ("_parameters", "_modules"):
                    continue
                fixed = fix(value)
                if fixed is not value:
                    setattr(m, name, fixed)


class Sampler:
    """Base class of zero-shot restoration samplers.

    Args:
        prior: the :class:`~zsir.priors.Prior` to sample with.
        steps: number of iterations (sampler-specific meaning; ``None`` = ``default_steps``).
        progress: show a tqdm bar with the NFE count.
        **hyperparameters: values for the names of :attr:`schema`, checked and converted by it (an unknown name,
            a wrong type or a value out of range raises ValueError naming the sampler, the parameter and the range).

    Class attributes:
        name: registry name.
        default_steps: iterations when ``steps`` is ``None``.
        schema: the sampler's own parameters (:class:`~zsir.samplers.params.Schema` of
            :class:`~zsir.samplers.params.Param`: paper symbol, type, default, valid range, doc, search range).
        hyperparameters: ``{name: default}``, derived from :attr:`schema`.
        presets: named settings reproducing published results (validated against :attr:`schema` when the class is
            defined; ``steps`` may be part of a preset).
        needs_grad: True only for samplers that differentiate through the prior (DPS).
        state_images: image-sized float32 tensors the sampler holds at its peak, outside the prior call (for the
            memory estimate of :mod:`zsir.memory`; checked against a measurement per sampler in the tests).
        work_bytes: bytes of scratch space the sampler needs whatever the image size (e.g. a bounded strip).
    """

    name: ClassVar[str] = ""
    default_steps: ClassVar[int] = 100
    schema: ClassVar[Schema] = Schema()
    hyperparameters: ClassVar[dict[str, Any]] = {}
    presets: ClassVar[dict[str, Preset]] = {}
    needs_grad: ClassVar[bool] = False
    state_images: ClassVar[int] = 12
    work_bytes: ClassVar[int] = 0

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "hyperparameters" in cls.__dict__:
            raise TypeError(
                f"{cls.__name__}: declare the hyperparameters as schema = Schema(Param(name, type, default, doc, "
                f"low=..., high=...), ...) (zsir.samplers.params); hyperparameters is derived from it"
            )
        cls.hyperparameters = cls.schema.defaults()
        for key, preset in cls.presets.items():
            try:
                cls.check_params(preset.params)
            except ValueError as err:
                raise ValueError(f"preset {key!r}: {err}") from None

    def __init__(self, prior: Prior, *, steps: int | None = None, progress: bool = True, **hyperparameters):
        if not isinstance(prior, Prior):
            raise TypeError(f"prior: expected a zsir.priors.Prior, got {type(prior).__name__}")
        checked = self.schema.validate(hyperparameters, self.name or type(self).__name__)
        self.prior = prior
        self.steps = int(steps) if steps is not None else self.default_steps
        if self.steps < 1:
            raise ValueError(f"steps: expected a positive integer, got {steps}")
        self.progress = progress
        self.params: dict[str, Any] = {**self.hyperparameters, **checked}
        self.nfe = 0
        self._bar: tqdm | None = None
        self._generator: torch.Generator | None = None

    # ----- hyperparameters, pd knob and presets ----------------------------------------------------------------
    @classmethod
    def check_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        """Validate hyperparameters (and an optional ``steps``) against :attr:`schema` without building a sampler;
        return them converted. Raises ValueError naming the sampler, the parameter and the valid range."""
        params = dict(params)
        steps = params.pop("steps", None)
        out = cls.schema.validate(params, cls.name)
        if steps is not None:
            if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
                raise ValueError(f"{cls.name}: steps: expected a positive integer, got {steps!r}")
            out["steps"] = steps
        return out

    @classmethod
    def search_space(cls) -> dict[str, Param]:
        """The hyperparameters worth tuning, ``{name: Param}``: numbers with ``search=(low, high)`` and ``log``,
        choices and flags with ``search=(value, ...)`` (:meth:`~zsir.samplers.params.Param.suggest` draws either)."""
        return cls.schema.search_space()

    @classmethod
    def pd_params(cls, pd: float) -> dict[str, Any]:
        """Hyperparameters for perception-distortion position ``pd`` in [0, 1] (0 = faithful, 1 = perceptual)."""
        raise NotImplementedError(f"{cls.__name__} has no perception-distortion mapping")

    @classmethod
    def preset(cls, name: str) -> Preset:
        if name not in cls.presets:
            raise ValueError(f"preset: unknown preset {name!r} for sampler {cls.name!r}; known: {sorted(cls.presets)}")
        return cls.presets[name]

    # ----- running --------------------------------------------------------------------------------------------
    def __call__(
        self,
        y: Tensor,
        operator: LinearOperator,
        sigma_y: Tensor,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Restore ``y`` (model units) and return the restoration in [-1, 1] (model units).

        Samplers that do not differentiate through the prior run under :func:`torch.inference_mode` (no autograd
        bookkeeping); the caches the operator and the priors built meanwhile (SVD factors, spectra) are then
        replaced by normal tensors, so the same objects still work with a differentiating sampler (DPS).
        """
        self.nfe = 0
        with tqdm(total=self.total_nfe(), disable=not self.progress, desc=self.name, unit="nfe", leave=False) as bar:
            self._bar, self._generator = bar, generator
            held = [operator, self.prior, *(v for v in self.params.values() if isinstance(v, nn.Module))]
            try:
                if self.needs_grad:
                    normal_tensors(*held)  # caches a run in inference mode left (or a caller's inference mode)
                    return self.run(y, operator, sigma_y, generator)
                with torch.inference_mode():
                    out = self.run(y, operator, sigma_y, generator)
                return out.clone()  # a normal tensor: callers may modify it in place or differentiate through it
            finally:
                self._bar = self._generator = None
                if not self.needs_grad:
                    normal_tensors(*held)

    def total_nfe(self) -> int | None:
        """Expected number of prior calls for the configured steps (``None`` if unknown)."""
        return None

    def run(self, y: Tensor, operator: LinearOperator, sigma_y: Tensor, generator) -> Tensor:
        raise NotImplementedError

    def denoise(self, x: Tensor, sigma: float | Tensor, *, prior: Prior | None = None, **kwargs) -> Tensor:
        """Call the prior's denoiser once, counting one NFE (one network call for the whole batch).

        ``prior`` selects another prior than ``self.prior`` (e.g. RDMD's deterministic branch); it is counted
        the same way. The sampler's generator shifts the prior's tile grid (:meth:`Prior.denoise`).
        """
        out = (self.prior if prior is None else prior).denoise(x, sigma, generator=self._generator, **kwargs)
        self.nfe += 1
        if self._bar is not None:
            self._bar.set_postfix(nfe=self.nfe, refresh=False)  # shown by the refresh of update()
            self._bar.update(1)
        return out


class DiffusionSampler(Sampler):
    """Base of the samplers that walk noisiest-first VE levels of a diffusion schedule, one prior call per step.

    ``self.levels`` holds the ``N`` levels ``sigma_{t_k}`` (model units) of the prior's alpha-bar table (the DDPM
    linear table for continuous, denoiser and exact priors) followed by ``0.0``. The timesteps ``t_k`` follow
    :attr:`spacing`, or are given explicitly as ``timesteps=`` (strictly decreasing integers of the table, e.g.
    :func:`~zsir.samplers.schedules.mcgdiff_timesteps`; then ``N = len(timesteps)``). When the prior's ``sigma_max`` is
    below the first level, sampling starts at ``self.start``, the first level the prior covers
    (:func:`~zsir.samplers.schedules.truncate_to_prior`), from an informative initialisation
    (:func:`~zsir.samplers.steps.initial_state`).

    Class attributes:
        spacing: ``"uniform"`` (DDIM / DDRM skip) or ``"quad"`` (DiffPIR).
    """

    spacing: ClassVar[str] = "uniform"

    def __init__(
        self,
        prior: Prior,
        *,
        steps: int | None = None,
        progress: bool = True,
        timesteps: Sequence[int] | None = None,
        **hyperparameters,
    ):
        if timesteps is not None:
            timesteps = [int(t) for t in timesteps]
            if steps is not None and int(steps) != len(timesteps):
                raise ValueError(f"steps: {steps} does not match the {len(timesteps)} timesteps given")
            steps = len(timesteps)
        super().__init__(prior, steps=steps, progress=progress, **hyperparameters)
        abar = schedules.prior_alphas_cumprod(prior)
        if timesteps is None:
            spacing = {"uniform": schedules.uniform_timesteps, "quad": schedules.quad_timesteps}[self.spacing]
            timesteps = spacing(self.steps, len(abar))
        else:
            decreasing = all(b < a for a, b in zip(timesteps, timesteps[1:], strict=False))
            if not decreasing or timesteps[-1] < 0 or timesteps[0] >= len(abar):
                raise ValueError(
                    f"timesteps: expected strictly decreasing integers in [0, {len(abar) - 1}] (noisiest first), "
                    f"got {timesteps}"
                )
            self.params["timesteps"] = timesteps  # an explicit grid is part of the reported settings
        self.timesteps = timesteps
        self.levels = schedules.diffusion_levels(timesteps, abar)
        if self.levels[-2] <= 0.0:
            raise ValueError(
                f"timesteps: timestep {timesteps[-1]} has noise level 0 in the prior's alpha-bar table; every sampler "
                f"ends at level 0 by itself, so leave it out (pass timesteps= without it)"
            )
        self.start = schedules.truncate_to_prior(self.levels[:-1], prior.sigma_max)

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        """:meth:`Sampler.check_params`, plus an explicit ``timesteps`` grid (checked against the prior's table when
        the sampler is built)."""
        params = dict(params)
        timesteps = params.pop("timesteps", None)
        out = super().check_params(params)
        if timesteps is not None:
            out["timesteps"] = timesteps
        return out

    def total_nfe(self) -> int:
        """One prior call per step: ``N`` (fewer when the start is truncated to the prior's ``sigma_max``)."""
        return self.steps - self.start
