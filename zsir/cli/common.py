"""Pieces the ``zsir`` subcommands share: usage errors, argument types, the solver options, prior and device
set-up, simulation of a measurement and scoring."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

import zsir
from zsir import io as zio
from zsir.registry import suggest
from zsir.tasks import Task, parse_task

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class UsageError(Exception):
    """A bad command line (exit code 2)."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise UsageError(message)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions kept as written; every option's help ends with its default (unless it states one)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        shown = action.option_strings and not action.required and default is not argparse.SUPPRESS
        if shown and default is not None and default is not False and default != [] and "default" not in text:
            text += " (default: %(default)s)"
        return text


def note(msg: str) -> None:
    tqdm.write(f"zsir: note: {msg}", file=sys.stderr)


def float_in(lo: float, hi: float) -> Callable[[str], float]:
    """An argparse type: a number in [lo, hi] (argparse prefixes the flag to the message)."""

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number in [{lo:g}, {hi:g}], got {text!r}") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"expected a number in [{lo:g}, {hi:g}], got {text}")
        return v

    return parse


def _int_at_least(text: str, low: int, what: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = low - 1
    if v < low:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return v


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1 (argparse prefixes the flag to the message)."""
    return _int_at_least(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    """An argparse type: an integer >= 0 (argparse prefixes the flag to the message)."""
    return _int_at_least(text, 0, "a non-negative integer")


def param(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. lambda_=10), got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def add_solver_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", required=True, type=Path, help="output folder (created if needed)")
    p.add_argument(
        "--sigma-y",
        type=float_in(0, 1),
        default=0.05,
        help="measurement noise std in [0, 1] image units (simulated noise; the assumed noise of a measured input)",
    )
    p.add_argument(
        "--prior",
        default="builtin",
        help="builtin, ffhq, imagenet, celebahq, bedroom-cm, cat-cm, imagenet64-cm, a Hub id or a local "
        "path (see `zsir priors`)",
    )
    p.add_argument(
        "--prior-config",
        default=None,
        metavar="NAME",
        help="architecture of a --prior checkpoint file in OpenAI's layout, e.g. ffhq256, imagenet256 or "
        "cm_bedroom256 (default: none; named priors, Hub ids and folders need none)",
    )
    p.add_argument(
        "--pd",
        type=float_in(0, 1),
        default=None,
        help="perception-distortion position: 0 faithful ... 1 perceptual; pd 0 is the preset tuned for the "
        "sampler, prior and task where one exists (default: 0.5, or the preset's own values when --preset is given; "
        "with --preset, --pd applies the sampler's generic mapping on top of it)",
    )
    p.add_argument("--steps", type=positive_int, default=None, help="iterations (default: the sampler's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise, random operators and the sampler")
    p.add_argument(
        "--device",
        type=device_name,
        default="auto",
        metavar="{auto,cpu,cuda,cuda:N}",
        help="where to run; auto = cuda when available, else cpu",
    )
    p.add_argument(
        "--dtype",
        choices=sorted(DTYPES),
        default="float32",
        help="precision of the prior network's arithmetic, by torch.autocast (weights, images and the sampler "
        "stay float32)",
    )
    p.add_argument(
        "--param",
        type=param,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a sampler hyperparameter (paper symbol), e.g. --param lambda_=10; a prior-valued one takes a prior "
        "name, path or Hub id like --prior, e.g. --param deterministic_prior=ffdnet (RDMD); repeatable "
        "(default: none)",
    )
    p.add_argument(
        "--tile",
        type=non_negative_int,
        default=None,
        metavar="SIZE",
        help="side in pixels of the tiles the prior denoises (a multiple of the prior's size multiple); 0 = no "
        "tiling (default: the training size of fixed-size priors, 512 for convolutional ones, smaller if "
        "--max-memory needs it)",
    )
    p.add_argument(
        "--tile-overlap",
        type=non_negative_int,
        default=None,
        metavar="PX",
        help="minimum overlap of neighbouring tiles in pixels (default: SIZE // 8)",
    )
    p.add_argument(
        "--max-memory",
        type=float_in(0.01, 1e6),
        default=None,
        metavar="GB",
        help="peak memory budget in GB; the peak is estimated before any work and the tile of a convolutional "
        "prior shrunk to fit (default: the default tile whatever the load, checked against the memory available "
        "on the device)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: off)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (default: bars shown)")


@dataclass
class Setup:
    sampler: str
    prior: Any
    prior_name: str
    device: torch.device
    params: dict[str, Any]
    param_names: dict[str, str] = field(default_factory=dict)  # prior-valued --param as given (for the JSON)


def sampler_class(name: str):
    from zsir.samplers import SAMPLERS

    try:
        return SAMPLERS.get(name)
    except ValueError as err:
        raise UsageError(str(err)) from None


def prior_params(sampler_cls) -> set[str]:
    """Names of the sampler's hyperparameters that take a :class:`~zsir.priors.Prior` (e.g. RDMD's
    ``deterministic_prior``): on the command line they take a prior name, path or Hub id."""
    from zsir.priors.base import Prior

    return {n for n, p in sampler_cls.schema.items() if isinstance(p.type, type) and issubclass(p.type, Prior)}


def check_params(sampler_cls, params: dict[str, Any], preset: str | None) -> None:
    """Usage errors for unknown or invalid ``--param`` values (a prior-valued one is checked when it is loaded)."""
    named = {k for k, v in params.items() if k in prior_params(sampler_cls) and isinstance(v, str)}
    for key in params:
        if key not in sampler_cls.hyperparameters:
            known = sorted(sampler_cls.hyperparameters)
            raise UsageError(
                f"--param: {sampler_cls.name} has no hyperparameter {key!r}; known: {', '.join(known)}."
                f"{suggest(key, known)}"
            )
    try:
        sampler_cls.check_params({k: v for k, v in params.items() if k not in named})
    except ValueError as err:
        raise UsageError(f"--param: {err}") from None
    if preset is not None:
        try:
            sampler_cls.preset(preset)
        except ValueError as err:
            raise UsageError(f"--preset: {err}{suggest(preset, list(sampler_cls.presets))}") from None


def task_from(spec: str) -> Task:
    try:
        return parse_task(spec)
    except (ValueError, FileNotFoundError) as err:
        raise UsageError(str(err)) from None


def device_name(text: str) -> str:
    """An argparse type: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (availability is checked by :func:`device_from`)."""
    name = text.strip().lower()
    head, _, index = name.partition(":")
    if name in ("auto", "cpu", "cuda") or (head == "cuda" and index.isdigit()):
        return name
    raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N (N = a GPU index), got {text!r}")


def device_from(name: str) -> torch.device:
    """The torch device for ``--device``; raises UsageError when CUDA or the GPU index is not there."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available on this machine (use --device cpu or auto)")
    device = torch.device(name)
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise UsageError(
            f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
            f"cuda:0 ... cuda:{torch.cuda.device_count() - 1}"
        )
    return device


def load_prior(name: str, device: torch.device, dtype: str, config: str | None = None, option: str = "--prior"):
    """``zsir.load_prior`` for the CLI: bad names, missing files and missing ``--prior-config`` are usage errors
    (naming ``option``)."""
    from zsir.priors import load_prior

    kwargs = {} if config is None else {"config": config}
    try:
        prior = load_prior(name, device=device, **kwargs)
    except (ValueError, TypeError, FileNotFoundError) as err:
        raise UsageError(f"{option}: {err}") from None
    prior.autocast_dtype = None if dtype == "float32" else DTYPES[dtype]  # weights stay float32 (autocast)
    return prior


def load_prior_params(
    sampler_cls, params: dict[str, Any], device: torch.device, dtype: str
) -> tuple[dict[str, Any], dict[str, str]]:
    """``params`` with every prior-valued ``--param`` given by name (``deterministic_prior=ffdnet``) replaced by the
    loaded prior (same device and ``--dtype`` as ``--prior``), and ``{key: name}`` of those for the JSON record."""
    names = {k: v for k, v in params.items() if k in prior_params(sampler_cls) and isinstance(v, str)}
    loaded = {k: load_prior(v, device, dtype, option=f"--param {k}") for k, v in names.items()}
    return {**params, **loaded}, names


def jsonable(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)
    if isinstance(v, (list, tuple)):
        return [jsonable(u) for u in v]
    if isinstance(v, dict):
        return {str(k): jsonable(u) for k, u in v.items()}
    if isinstance(v, Tensor) and v.numel() <= 16:
        return jsonable(v.detach().cpu().tolist())
    if isinstance(v, Path):
        return str(v)
    return repr(v) if len(repr(v)) <= 200 else type(v).__name__


def images_in(paths: Sequence[Path]) -> list[Path]:
    """Files as given, folders expanded to their supported images (sorted, not recursive)."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in zio.SUPPORTED_SUFFIXES)
            if not found:
                raise UsageError(f"{p}: folder has no images ({', '.join(zio.SUPPORTED_SUFFIXES)})")
            out.extend(found)
        else:
            out.append(p)
    return out


def solve(
    y: Tensor,
    op,
    setup: Setup,
    args,
    steps: int | None,
    pd: float | None,
    preset: str | None = None,
    num_samples: int = 1,
    seed: int | None = None,
    task: Task | None = None,
):
    """:func:`zsir.solve` with the command's options; the sampler draws from ``seed`` (default ``--seed``); ``task``
    lets ``pd`` start from the preset tuned for it (:mod:`zsir.samplers.pd`)."""
    return zsir.solve(
        y.to(setup.device),
        op,
        sampler=setup.sampler,
        prior=setup.prior,
        sigma_y=args.sigma_y,
        pd=pd,
        steps=steps,
        preset=preset,
        num_samples=num_samples,
        generator=args.seed if seed is None else seed,
        progress=not args.no_progress,
        return_result=True,
        tile=args.tile,
        tile_overlap=args.tile_overlap,
        max_memory=args.max_memory,
        task=task,
        **setup.params,
    )


def simulate(x: Tensor, task: Task, sigma_y: float, seed: int):
    """Operator and seeded measurement ``y = A x + sigma_y n`` of a clean image batch ``x``."""
    from zsir.operators import GaussianNoise, degrade

    task.check_size(tuple(x.shape[-2:]))
    if task.kind == "colorize" and x.shape[1] != 3:
        raise ValueError("colorize --simulate needs a colour (RGB) image as ground truth")
    op = task.operator(tuple(x.shape[-2:]), seed=seed)
    noise = GaussianNoise(sigma_y) if sigma_y > 0 else None
    return op, degrade(x, op, noise, generator=torch.Generator().manual_seed(seed))


def score(x_hat: Tensor, x: Tensor) -> tuple[dict[str, float | None], dict[str, str]]:
    from zsir.metrics import compute_metrics

    values, unavailable = compute_metrics(x_hat.float().cpu(), x.float().cpu())
    return {k: (None if v is None else float(v[0])) for k, v in values.items()}, unavailable
