"""Shared helpers of the zsir examples: arguments, images, prior fallback, simulate + restore + figure.

Every example restores real images: the folder given with ``--images``, else ``../shared/data/<dataset>`` beside
the repository when present, else ``examples/data/astronaut.png`` (shipped with zsir). ``--quick`` shrinks the run
(64 x 64 images, a few steps) so that it finishes in seconds on a CPU.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

import zsir
from zsir import io as zio
from zsir.metrics import haarpsi, psnr
from zsir.operators import GaussianNoise, degrade
from zsir.tasks import parse_task

HERE = Path(__file__).resolve().parent
SHARED_DATA = HERE.parents[1] / "shared" / "data"
FALLBACK_IMAGE = HERE / "data" / "astronaut.png"


def parse_args(description: str, dataset: str, steps: int, quick_steps: int, size: int = 256) -> argparse.Namespace:
    """Common command line: ``--images``, ``--limit``, ``--size``, ``--steps``, ``--quick``, ``--out``, ``--seed``."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--images",
        type=Path,
        default=None,
        help=f"folder of clean images (default: {SHARED_DATA / dataset} if present, else the astronaut)",
    )
    p.add_argument("--limit", type=int, default=2, help="number of images")
    p.add_argument("--size", type=int, default=size, help="images are resized to SIZE x SIZE")
    p.add_argument("--steps", type=int, default=steps)
    p.add_argument("--quick", action="store_true", help="64 x 64 images, few steps, one image")
    p.add_argument("--out", type=Path, default=Path("outputs"), help="output folder")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.quick:
        args.size, args.steps, args.limit = min(args.size, 64), quick_steps, 1
    args.dataset = dataset
    return args


def load_images(folder: Path | None, dataset: str, limit: int, size: int) -> list[tuple[str, torch.Tensor]]:
    """``limit`` RGB images ``(1, 3, size, size)`` in [0, 1] (centre-cropped to a square, area-resized)."""
    if folder is None:
        folder = SHARED_DATA / dataset if (SHARED_DATA / dataset).is_dir() else None
    paths = (
        [FALLBACK_IMAGE]
        if folder is None
        else sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in zio.SUPPORTED_SUFFIXES)
    )
    if not paths:
        raise SystemExit(f"no images in {folder}")
    images = []
    for path in paths[:limit]:
        x = zio.read_image(path, channels=3)
        h, w = x.shape[-2:]
        s = min(h, w)
        x = x[..., (h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
        images.append((path.stem, F.interpolate(x, size=(size, size), mode="area") if s != size else x))
    print(f"{len(images)} image(s) from {folder or FALLBACK_IMAGE}, {size}x{size}")
    return images


def load_prior_or_builtin(name: str):
    """``zsir.load_prior(name)``, or the built-in prior (with a notice) when the weights cannot be had."""
    from zsir.priors import CheckpointError, PriorDownloadError

    try:
        prior = zsir.load_prior(name)
        print(f"prior: {name}")
        return prior, name
    except (PriorDownloadError, CheckpointError, OSError, RuntimeError) as err:
        print(
            f"notice: the {name!r} prior is not available ({type(err).__name__}: {str(err).splitlines()[0][:160]}); "
            "falling back to the built-in prior, so the numbers are not the paper's"
        )
        return zsir.load_prior("builtin"), "builtin"


def restore(x: torch.Tensor, task: str, sampler: str, prior, sigma_y: float, seed: int, **solve_kwargs):
    """Simulate ``y = A x + sigma_y n`` for a clean ``x`` and restore it with :func:`zsir.solve` (told the task, so
    ``pd`` starts from the preset tuned for the sampler, prior and task where one exists).

    Returns ``(y, result, scores)`` with ``scores = {"psnr": .., "haarpsi": ..}``.
    """
    t = parse_task(task)
    op = t.operator(tuple(x.shape[-2:]), seed=seed)
    y = degrade(x, op, GaussianNoise(sigma_y) if sigma_y > 0 else None, generator=torch.Generator().manual_seed(seed))
    res = zsir.solve(
        y,
        op,
        sampler=sampler,
        prior=prior,
        sigma_y=sigma_y,
        generator=seed,
        return_result=True,
        progress=False,
        task=t,
        **solve_kwargs,
    )
    return y, res, {"psnr": float(psnr(res.x, x)[0]), "haarpsi": float(haarpsi(res.x, x)[0])}


def run(
    description: str,
    dataset: str,
    prior_name: str,
    task: str,
    sampler: str,
    sigma_y: float,
    steps: int,
    quick_steps: int,
    preset: str | None = None,
    pd: float | None = None,
    size: int = 256,
) -> None:
    """The whole example: images, prior (or the fallback), restore each, print scores, save figure + PNG."""
    args = parse_args(description, dataset, steps, quick_steps, size)
    torch.manual_seed(args.seed)
    prior, used = load_prior_or_builtin(prior_name)
    kwargs = {"steps": args.steps}
    if preset is not None and used == prior_name:
        kwargs["preset"] = preset
    elif pd is not None:
        kwargs["pd"] = pd
    out = args.out / Path(sys.argv[0]).stem
    for name, x in load_images(args.images, dataset, args.limit, args.size):
        y, res, scores = restore(x, task, sampler, prior, sigma_y, args.seed, **kwargs)
        print(
            f"{name}: {task} sigma_y={sigma_y} {sampler} ({used}): PSNR {scores['psnr']:.2f} dB, "
            f"HaarPSI {scores['haarpsi']:.3f}, {res.nfe} NFE, {res.seconds:.1f} s"
        )
        zio.write_image(out / f"{name}.png", res.x)
        panels = [(f"measurement {task}", y[0]), (f"{sampler} ({used})", res.x[0]), ("ground truth", x[0])]
        zio.atomic_write(out / f"{name}_grid.png", zio.grid_image(panels, tuple(x.shape[-2:])))
    print(f"wrote {out}")
