r"""Memory: measure what a call allocates, estimate the peak of a restoration before it starts, and choose a tiling
that fits.

The estimate of :func:`estimate` (bytes) for a batch of ``n = B * num_samples`` images of ``C x H x W`` pixels is

.. math::

    M = M_\text{weights} + M_\text{operator} + M_\text{work} + (S + 2) \cdot 4 n C H W
        + \beta \cdot n \cdot \min(H, T) \min(W, T) \cdot b_\text{prior}

* ``S`` image-sized float32 tensors of sampler state (``Sampler.state_images``, measured per
  sampler in the tests) plus 2 for the tiled blend (sum and output);
* ``M_operator`` the operator's own tensors (:func:`operator_bytes`), ``M_work`` the sampler's fixed scratch
  space (``Sampler.work_bytes``);
* ``b_prior`` the peak bytes per pixel of one network call (:meth:`zsir.priors.Prior.bytes_per_pixel`, measured
  once on a small probe), ``T`` the tile side (``T = inf`` without tiling), ``beta = 1.25`` a margin for the
  allocator.

:func:`plan` compares ``M`` with the budget. With ``max_memory`` it shrinks the tile of fully convolutional
priors until the estimate fits. Without it, the tile is always the prior's default (outputs never depend on the
machine's load) and the budget is the memory available on the device now, used only as a guard. When the
estimate exceeds the budget it raises :class:`MemoryBudgetError` with the estimate and the options that do fit.
"""

from __future__ import annotations

import math
import os
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = [
    "MemoryBudgetError", "TilingPlan", "available_bytes", "estimate", "operator_bytes", "peak_bytes", "plan",
]  # fmt: skip

GB = 1e9
MARGIN = 1.25
MIN_CONV_TILE = 64


class MemoryBudgetError(MemoryError):
    """The estimated peak exceeds the budget and no tiling / batch brings it under; the message lists options."""


class _PeakCounter(TorchDispatchMode):
    """Counts the bytes of every storage created by a torch op while active; ``peak`` is the high-water mark."""

    def __init__(self) -> None:
        super().__init__()
        self.current = 0
        self.peak = 0
        self._live: set[tuple[str, int]] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                storage = t.untyped_storage()
                key = (str(t.device), storage.data_ptr())
                n = storage.nbytes()
                if n == 0 or key in self._live:
                    continue
                self._live.add(key)
                self.current += n
                self.peak = max(self.peak, self.current)
                weakref.finalize(storage, self._release, key, n)
        return out

    def _release(self, key: tuple[str, int], n: int) -> None:
        self._live.discard(key)
        self.current -= n


@contextmanager
def peak_bytes() -> Iterator[_PeakCounter]:
    """Context that records the peak bytes of the tensors torch ops allocate inside it (any device).

    Tensors alive before the context are not counted. ``with peak_bytes() as m: ...; m.peak``.
    """
    counter = _PeakCounter()
    with counter:
        yield counter


def available_bytes(device: torch.device | str = "cpu") -> int:
    """Memory a new allocation can use now: free CUDA memory, or the OS's available RAM (``MemAvailable``)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


@dataclass
class TilingPlan:
    """What :func:`plan` chose: tile side (0 = none) and overlap in pixels, the estimated peak and the budget
    (bytes), and where the budget came from (``"max_memory"`` or ``"available"``)."""

    tile: int
    overlap: int
    estimate: int
    budget: int
    budget_source: str
    tiles_per_call: int  # at most, over the grid shifts

    def as_dict(self) -> dict:
        d = asdict(self)
        d["estimate_gb"] = round(self.estimate / GB, 3)
        d["budget_gb"] = round(self.budget / GB, 3)
        return d


def _weights_bytes(prior) -> int:
    return sum(t.numel() * t.element_size() for t in [*prior.parameters(), *prior.buffers()])


def operator_bytes(operator, x_shape: tuple[int, ...] | None = None) -> int:
    """Bytes of the tensors an operator holds (parameters, buffers and tensor attributes of it and its parts, its
    caches included), or, with ``x_shape``, what it will hold for such images if it says so (``factor_bytes``)."""
    seen: dict[int, int] = {}
    for m in operator.modules():
        found = [*m.parameters(recurse=False), *m.buffers(recurse=False), *vars(m).values()]
        while found:  # tensors, also inside the caches (dicts of tuples) operators keep
            t = found.pop()
            if isinstance(t, dict):
                found.extend(t.values())
            elif isinstance(t, (tuple, list)):
                found.extend(t)
            elif isinstance(t, torch.Tensor) and t.device.type != "meta":
                seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    held = sum(seen.values())
    predicted = [m.factor_bytes(x_shape) for m in operator.modules() if x_shape and hasattr(m, "factor_bytes")]
    return max(held, sum(predicted))


def estimate(prior, sampler_cls, operator, x_shape: tuple[int, ...], num_samples: int, tile: int) -> int:
    """Estimated peak bytes of a restoration (module docstring); ``tile`` 0 = untiled."""
    B, C, H, W = x_shape
    n = B * num_samples
    image = 4 * n * C * H * W
    # a differentiating sampler (DPS) keeps every tile's activations until the backward pass: tiling cannot help
    th, tw = (min(H, tile), min(W, tile)) if tile and not sampler_cls.needs_grad else (H, W)
    net = MARGIN * n * th * tw * prior.bytes_per_pixel(grad=sampler_cls.needs_grad)
    fixed = _weights_bytes(prior) + operator_bytes(operator, x_shape) + sampler_cls.work_bytes
    return int(fixed + (sampler_cls.state_images + 2) * image + net)


def _tiles(H: int, W: int, tile: int, overlap: int) -> int:
    from zsir.priors.base import tile_starts

    if not tile:
        return 1
    stride = max(tile - overlap, 1)
    return len(tile_starts(H, tile, stride, stride - 1)) * len(tile_starts(W, tile, stride, stride - 1))


def plan(
    prior,
    sampler_cls,
    operator,
    x_shape: tuple[int, ...],
    num_samples: int,
    *,
    tile: int | None = None,
    overlap: int | None = None,
    max_memory: float | None = None,
    device: torch.device | str = "cpu",
) -> TilingPlan:
    """Choose the tiling of a restoration so the estimated peak stays under the budget, before any work.

    Args:
        tile, overlap: the caller's request (pixels); ``None`` = the prior's default (``tile`` may then shrink
            for a fully convolutional prior to fit ``max_memory``), ``tile=0`` = no tiling.
        max_memory: the budget in **GB** (1e9 bytes). ``None``: the tile is the default whatever the load (so
            the output is too), and the memory available on ``device`` now is only checked against.

    Raises:
        ValueError: ``x_shape`` smaller than 2x2 pixels, or ``tile`` / ``overlap`` unusable with the prior.
        MemoryBudgetError: nothing fits; the message gives the estimate and the options that fit.
    """
    B, C, H, W = x_shape
    if H < 2 or W < 2:
        raise ValueError(f"image: {H}x{W} pixels is too small to restore (at least 2x2 needed)")
    if max_memory is not None and not (isinstance(max_memory, (int, float)) and max_memory > 0):
        raise ValueError(f"max_memory: expected a positive number of GB, got {max_memory!r}")
    prior.check_tiling(tile, overlap)
    with prior.use_tiling(tile, overlap):
        default_tile, default_overlap = prior.tiling()
    budget = int(max_memory * GB) if max_memory is not None else available_bytes(device)
    source = "max_memory" if max_memory is not None else "available"

    def make(t: int) -> TilingPlan:
        ov = overlap if overlap is not None else (default_overlap if t == default_tile else max(8, t // 8))
        ov = min(ov, max(t - 1, 0))
        est = estimate(prior, sampler_cls, operator, x_shape, num_samples, t)
        return TilingPlan(t, ov if t else 0, est, budget, source, _tiles(H, W, t, ov))

    first = make(default_tile)
    if first.estimate <= budget:
        return first
    candidates = []  # smaller tiles of a fully convolutional prior: chosen only under --max-memory, else suggested
    if tile is None and prior.fully_convolutional:
        t = default_tile or max(H, W)
        while t // 2 >= max(MIN_CONV_TILE, 2 * prior.multiple):
            t = t // 2 // prior.multiple * prior.multiple
            candidates.append(make(t))
            if candidates[-1].estimate <= budget:
                break
    fitting = candidates[-1] if candidates and candidates[-1].estimate <= budget else None
    if fitting is not None and max_memory is not None:
        return fitting
    smallest = candidates[-1] if candidates else first
    options = []
    if fitting is not None:
        options.append(f"tiles of {fitting.tile} px (--tile {fitting.tile}, about {fitting.estimate / GB:.2f} GB)")
    per_image = max(smallest.estimate - _weights_bytes(prior), 1) / (B * num_samples)
    fit_batch = int((budget - _weights_bytes(prior)) // per_image)
    if fit_batch >= 1 and B * num_samples > 1:
        options.append(f"a smaller batch: at most {fit_batch} image(s) x samples per call (--batch-size)")
    if tile is not None:
        try:
            fits = plan(prior, sampler_cls, operator, x_shape, num_samples, max_memory=budget / GB)
            how = "zsir's choice without --tile" if max_memory is not None else f"--tile {fits.tile}"
            options.append(f"tiles of {fits.tile} px, {how} ({fits.estimate / GB:.2f} GB)")
        except MemoryBudgetError:
            pass
    need = first if max_memory is None else smallest  # the default tile fits any budget above its estimate
    options.append(f"--max-memory {math.ceil(need.estimate / GB * 10) / 10:g} (GB) if the machine has it")
    raise MemoryBudgetError(
        f"a {H}x{W} restoration of {B} image(s) x {num_samples} sample(s) with {prior.name} and "
        f"{sampler_cls.name} needs about {first.estimate / GB:.2f} GB"
        + (f" (tile {first.tile})" if first.tile else " (untiled)")
        + (f", {smallest.estimate / GB:.2f} GB at the smallest tile {smallest.tile}" if candidates else "")
        + f", over the budget of {budget / GB:.2f} GB ({'--max-memory' if max_memory else 'available memory'}). "
        "Options that fit: " + "; ".join(options)
    )
