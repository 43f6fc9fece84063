r"""The ``zsir`` command line: ``restore``, ``bench``, ``priors`` and ``train-prior``.

``zsir restore INPUT... -o OUT --task sr4`` restores image files (or every image in folders). Two modes:

* **measured** (default): each input *is* the degraded image (a real photo); the operator comes from ``--task``
  and its files. For ``sr4`` the input is the low-resolution image and the output is 4x larger; for inpainting the
  holes come from ``inpaint-mask:FILE`` (or the default centred box of ``inpaint-box``); for ``colorize`` the input
  is grey. Random operators (``deblur-motion``, ``inpaint-random``) need ``--simulate``.
* ``--simulate``: each input is a clean image; zsir degrades it (operator + seeded Gaussian noise of std
  ``--sigma-y``), restores it and scores the restoration against it. A clean image whose size is not divisible by
  the SR factor is an error (zsir never crops silently, so the scores refer to the file you gave).

Per input ``NAME.*`` it writes ``OUT/NAME.png`` (the restoration; with ``--num-samples K > 1`` the mean of the
samples, each sample as ``NAME_s<k>.png``), ``OUT/NAME_grid.png`` (measurement | restoration | ground truth) and
``OUT/NAME.json`` (metrics, NFE, seconds, every parameter, zsir's version), in that order, each atomically. Existing
outputs are never replaced without ``--overwrite``; ``--resume`` skips inputs whose outputs are complete. A failing
input is reported and the batch goes on; the exit code is then 1. Usage errors exit with 2.

Every restoration goes through :func:`zsir.solve`.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

import zsir
from zsir import io as zio
from zsir.registry import suggest
from zsir.tasks import TASK_NAMES, Task, parse_task

__all__ = ["main", "build_parser", "UsageError"]

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_BENCH_COLUMNS = ["task", "sampler", "images", "psnr", "ssim", "lpips", "haarpsi", "mdsi", "nfe", "seconds"]


class UsageError(Exception):
    """A bad command line (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise UsageError(message)


def _note(msg: str) -> None:
    tqdm.write(f"zsir: note: {msg}", file=sys.stderr)


def _float_in(lo: float, hi: float, flag: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag}: expected a number in [{lo:g}, {hi:g}], got {text!r}") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"{flag}: expected a number in [{lo:g}, {hi:g}], got {text}")
        return v

    return parse


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def _param(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--param: expected KEY=VALUE (e.g. lambda_=10), got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


# ----- parser -------------------------------------------------------------------------------------------------
def _add_solver_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", required=True, type=Path, help="output folder (created if needed)")
    p.add_argument("--sigma-y", type=_float_in(0, 1, "--sigma-y"), default=0.05,
                   help="measurement noise std in [0, 1] image units (simulated noise; the assumed noise of a "
                        "measured input) (default: 0.05)")
    p.add_argument("--prior", default="builtin",
                   help="builtin, ffhq, imagenet, celebahq, bedroom-cm, cat-cm, imagenet64-cm, a Hub id or a local "
                        "path (default: builtin)")
    p.add_argument("--pd", type=_float_in(0, 1, "--pd"), default=None,
                   help="perception-distortion position: 0 faithful ... 1 perceptual (default: 0.5, or the preset's "
                        "own values when --preset is given)")
    p.add_argument("--steps", type=_positive_int, default=None, help="iterations (default: the sampler's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise, random operators and the sampler")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--dtype", choices=sorted(_DTYPES), default="float32",
                   help="precision of the prior network (images and the sampler stay float32)")
    p.add_argument("--param", type=_param, action="append", default=[], metavar="KEY=VALUE",
                   help="a sampler hyperparameter (paper symbol), e.g. --param lambda_=10; repeatable")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    """The ``zsir`` argument parser (usage errors raise :class:`UsageError`)."""
    parser = _Parser(prog="zsir", description="Zero-shot image restoration with diffusion and consistency priors.")
    parser.add_argument("--version", action="version", version=f"zsir {zsir.__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    r = sub.add_parser("restore", help="restore image files", description=__doc__.split("\n\n")[1],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="image files or folders")
    r.add_argument("--task", required=True, help=f"one of: {', '.join(TASK_NAMES)}")
    r.add_argument("--sampler", default="rdmd", help="rdmd, cm4ir, ddrm, ddnm, ddnm+, diffpir, dps, pnp")
    _add_solver_options(r)
    r.add_argument("--preset", default=None, help="a named published setting of the sampler")
    r.add_argument("--num-samples", type=_positive_int, default=1, help="posterior samples per input")
    r.add_argument("--batch-size", type=_positive_int, default=1, help="same-size inputs restored per solve call")
    r.add_argument("--simulate", action="store_true",
                   help="inputs are clean: degrade them, restore, and score against them")
    r.add_argument("--resume", action="store_true", help="skip inputs whose outputs are complete")
    r.add_argument("--bit-depth", type=int, choices=[8, 16], default=8, help="bits per sample of the restored PNG")
    r.set_defaults(func=_cmd_restore)

    b = sub.add_parser("bench", help="score samplers on a folder of clean images (simulate mode)")
    b.add_argument("--dataset", required=True, type=Path, help="folder of clean images")
    b.add_argument("--tasks", required=True, help="comma-separated tasks, e.g. sr4,deblur-gauss")
    b.add_argument("--samplers", default="rdmd", help="comma-separated samplers, e.g. rdmd,ddrm")
    b.add_argument("--limit", type=_positive_int, default=None, help="use the first N images (sorted by name)")
    b.add_argument("--crop", type=_positive_int, default=None, help="centre-crop images to CROP x CROP first")
    _add_solver_options(b)
    b.set_defaults(func=_cmd_bench)

    p = sub.add_parser("priors", help="list the known priors and whether their weights are cached")
    p.set_defaults(func=_cmd_priors)
    sub.add_parser("train-prior", help="train the built-in prior (see `zsir train-prior --help`)", add_help=False)
    return parser


# ----- shared set-up ------------------------------------------------------------------------------------------
@dataclass
class _Setup:
    sampler: str
    prior: Any
    prior_name: str
    device: torch.device
    params: dict[str, Any]


def _sampler_class(name: str):
    from zsir.samplers import SAMPLERS

    try:
        return SAMPLERS.get(name)
    except ValueError as err:
        raise UsageError(str(err)) from None


def _check_params(sampler_cls, params: dict[str, Any], preset: str | None) -> None:
    for key in params:
        if key not in sampler_cls.hyperparameters:
            known = sorted(sampler_cls.hyperparameters)
            raise UsageError(f"--param: {sampler_cls.name} has no hyperparameter {key!r}; known: {', '.join(known)}."
                             f"{suggest(key, known)}")
    if preset is not None:
        try:
            sampler_cls.preset(preset)
        except ValueError as err:
            raise UsageError(f"--preset: {err}{suggest(preset, list(sampler_cls.presets))}") from None


def _task(spec: str) -> Task:
    try:
        return parse_task(spec)
    except (ValueError, FileNotFoundError) as err:
        raise UsageError(str(err)) from None


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: CUDA is not available on this machine (use --device cpu or auto)")
    return torch.device(name)


def _load_prior(name: str, device: torch.device, dtype: str):
    from zsir.priors import load_prior

    try:
        return load_prior(name, device=device, dtype=None if dtype == "float32" else _DTYPES[dtype])
    except (ValueError, TypeError) as err:
        raise UsageError(f"--prior: {err}") from None


def _jsonable(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)
    if isinstance(v, (list, tuple)):
        return [_jsonable(u) for u in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(u) for k, u in v.items()}
    if isinstance(v, Tensor) and v.numel() <= 16:
        return _jsonable(v.detach().cpu().tolist())
    if isinstance(v, Path):
        return str(v)
    return repr(v) if len(repr(v)) <= 200 else type(v).__name__


def _images_in(paths: Sequence[Path]) -> list[Path]:
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


def _solve(y: Tensor, op, setup: _Setup, args, steps: int | None, pd: float | None, preset: str | None = None,
           num_samples: int = 1):
    return zsir.solve(
        y.to(setup.device), op, sampler=setup.sampler, prior=setup.prior, sigma_y=args.sigma_y, pd=pd,
        steps=steps, preset=preset, num_samples=num_samples, generator=args.seed,
        progress=not args.no_progress, return_result=True, **setup.params,
    )


def _simulate(x: Tensor, task: Task, sigma_y: float, seed: int):
    """Operator and seeded measurement ``y = A x + sigma_y n`` of a clean image batch ``x``."""
    from zsir.operators import GaussianNoise, degrade

    task.check_size(tuple(x.shape[-2:]))
    if task.kind == "colorize" and x.shape[1] != 3:
        raise ValueError("colorize --simulate needs a colour (RGB) image as ground truth")
    op = task.operator(tuple(x.shape[-2:]), seed=seed)
    noise = GaussianNoise(sigma_y) if sigma_y > 0 else None
    return op, degrade(x, op, noise, generator=torch.Generator().manual_seed(seed))


# ----- restore ------------------------------------------------------------------------------------------------
def _outputs(outdir: Path, stem: str, num_samples: int) -> dict[str, Path]:
    out = {"restored": outdir / f"{stem}.png", "grid": outdir / f"{stem}_grid.png"}
    out.update({f"sample{k}": outdir / f"{stem}_s{k}.png" for k in range(num_samples if num_samples > 1 else 0)})
    out["json"] = outdir / f"{stem}.json"  # last: its presence marks a complete set
    return out


def _complete(files: dict[str, Path]) -> bool:
    if not all(p.is_file() for p in files.values()):
        return False
    try:
        return "zsir_version" in json.loads(files["json"].read_text())
    except (OSError, ValueError):
        return False


def _plan(args, inputs: list[Path]) -> list[tuple[Path, dict[str, Path]]]:
    """Outputs of every input to do; raises UsageError on name clashes or existing outputs."""
    by_stem: dict[str, Path] = {}
    plan, existing = [], []
    for path in inputs:
        if path.stem in by_stem:
            raise UsageError(f"inputs {by_stem[path.stem]} and {path} would write the same outputs "
                             f"({path.stem}.png); rename one")
        by_stem[path.stem] = path
        files = _outputs(args.output, path.stem, args.num_samples)
        if any(p.resolve() == path.resolve() for p in files.values()):
            raise UsageError(f"{path}: the output would replace the input; choose another -o folder")
        if args.resume and not args.overwrite and _complete(files):
            continue
        if not (args.overwrite or args.resume):
            existing += [p for p in files.values() if p.exists()]
        plan.append((path, files))
    if existing:
        more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
        shown = ", ".join(str(p) for p in existing[:3]) + more
        raise UsageError(f"output file(s) already exist: {shown}; pass --overwrite to replace them or --resume to "
                         "skip finished inputs")
    return plan


def _prepare(path: Path, task: Task, args, channels: int) -> dict[str, Any]:
    """Read one input and build its measurement: {y, op, x (ground truth or None), key}."""
    raw = zio.read_image(path)
    if args.simulate:
        if float(raw.min()) < 0 or float(raw.max()) > 1:
            raise ValueError(f"{path}: a ground-truth image must lie in [0, 1], got [{raw.min():.3g}, {raw.max():.3g}]")
        if task.kind == "colorize":
            x = raw  # _simulate checks that it is RGB
        else:
            if raw.shape[1] != channels:
                _note(f"{path}: {raw.shape[1]}-channel image converted to {channels} channel(s) for the prior")
            x = zio.to_channels(raw, channels)
        op, y = _simulate(x, task, args.sigma_y, args.seed)
        return {"x": x, "y": y, "op": op}
    want = 1 if task.kind == "colorize" else channels
    if raw.shape[1] != want:
        _note(f"{path}: {raw.shape[1]}-channel input converted to {want} channel(s) "
              f"({'channel mean' if want == 1 else 'grey replicated'})")
    y = zio.to_channels(raw, want)
    op = task.operator(task.x_size(tuple(y.shape[-2:])), seed=args.seed)
    op.check_y(y)
    if task.kind == "inpaint":
        y = op.A(y)  # whatever the file holds in the holes is not a measurement
    return {"x": None, "y": y, "op": op}


def _score(x_hat: Tensor, x: Tensor) -> tuple[dict[str, float | None], dict[str, str]]:
    from zsir.metrics import compute_metrics

    values, unavailable = compute_metrics(x_hat.float().cpu(), x.float().cpu())
    return {k: (None if v is None else float(v[0])) for k, v in values.items()}, unavailable


def _write_outputs(item: dict[str, Any], samples: Tensor, res, args, task: Task, setup: _Setup, batch: int) -> None:
    """Write one input's outputs; if any write fails, the ones written before it are removed again."""
    try:
        _write_set(item, samples, res, args, task, setup, batch)
    except BaseException:
        for p in item["files"].values():
            p.unlink(missing_ok=True)
        raise


def _write_set(item: dict[str, Any], samples: Tensor, res, args, task: Task, setup: _Setup, batch: int) -> None:
    files: dict[str, Path] = item["files"]
    x_hat = samples.mean(0, keepdim=True) if samples.shape[0] > 1 else samples[:1]
    zio.write_image(files["restored"], x_hat, bit_depth=args.bit_depth)
    label = f"{setup.sampler} " + (f"pd={args.pd:g}" if args.pd is not None else f"preset {args.preset}")
    panels = [(f"measurement ({task.name}, sigma_y {args.sigma_y:g})", item["y"][0]), (label, x_hat[0])]
    if item["x"] is not None:
        panels.append(("ground truth", item["x"][0]))
    zio.atomic_write(files["grid"], zio.grid_image(panels, tuple(x_hat.shape[-2:])))
    for k in range(samples.shape[0] if samples.shape[0] > 1 else 0):
        zio.write_image(files[f"sample{k}"], samples[k : k + 1], bit_depth=args.bit_depth)
    metrics, unavailable = _score(x_hat, item["x"]) if item["x"] is not None else (None, {})
    record = {
        "zsir_version": zsir.__version__,
        "input": str(item["path"]),
        "mode": "simulate" if args.simulate else "measured",
        "task": task.name,
        "operator": repr(item["op"]).replace("\n", " "),
        "sampler": res.sampler,
        "prior": setup.prior_name,
        "sigma_y": args.sigma_y,
        "pd": args.pd,
        "preset": args.preset,
        "steps": res.steps,
        "seed": args.seed,
        "num_samples": args.num_samples,
        "batch_size": batch,
        "device": str(setup.device),
        "dtype": args.dtype,
        "bit_depth": args.bit_depth,
        "params": _jsonable(res.params),
        "nfe": res.nfe,
        "seconds": res.seconds / batch,
        "batch_seconds": res.seconds,
        "measurement_shape": list(item["y"].shape),
        "output_shape": list(x_hat.shape),
        "metrics": metrics,
        "metrics_unavailable": unavailable,
        "sample_std": float(samples.std(0).mean()) if samples.shape[0] > 1 else None,
        "outputs": {k: p.name for k, p in files.items()},
    }
    zio.write_text(files["json"], json.dumps(record, indent=2) + "\n")


def _cmd_restore(args) -> int:
    sampler_cls = _sampler_class(args.sampler)
    params = dict(args.param)
    _check_params(sampler_cls, params, args.preset)
    task = _task(args.task)
    if task.random and not args.simulate:
        alt = "inpaint-mask:FILE" if task.kind == "inpaint" else "deblur-kernel:FILE"
        raise UsageError(f"--task {task.name} draws a random operator, which only makes sense with --simulate; for "
                         f"a real degraded photo pass the actual one with --task {alt}")
    pd = 0.5 if args.pd is None and args.preset is None else args.pd
    args.pd = pd
    inputs = _images_in(args.inputs)
    plan = _plan(args, inputs)
    if not plan:
        _note(f"all {len(inputs)} input(s) are complete in {args.output} (--resume); nothing to do")
        return 0
    device = _device(args.device)
    setup = _Setup(sampler_cls.name, _load_prior(args.prior, device, args.dtype), args.prior, device, params)
    args.output.mkdir(parents=True, exist_ok=True)

    failures: list[tuple[Path, str]] = []
    pending: dict[tuple, list[dict[str, Any]]] = {}
    bar = tqdm(total=len(plan), desc="zsir restore", unit="image", disable=args.no_progress)

    def fail(path: Path, err: BaseException) -> None:
        failures.append((path, f"{type(err).__name__}: {err}"))
        msg = str(err) if str(path) in str(err) else f"{path}: {err}"
        tqdm.write(f"zsir: error: {msg}", file=sys.stderr)
        if args.debug:
            raise err

    def flush(key: tuple) -> None:
        items = pending.pop(key)
        try:
            y = torch.cat([it["y"] for it in items])
            res = _solve(y, items[0]["op"], setup, args, args.steps, pd, args.preset, args.num_samples)
        except Exception as err:  # noqa: BLE001 (reported, the batch goes on)
            for it in items:
                fail(it["path"], err)
            bar.update(len(items))
            return
        for b, it in enumerate(items):
            try:
                _write_outputs(it, res.samples[:, b].cpu(), res, args, task, setup, len(items))
            except Exception as err:  # noqa: BLE001
                fail(it["path"], err)
            bar.update(1)

    try:
        for path, files in plan:
            try:
                item = _prepare(path, task, args, setup.prior.channels)
            except Exception as err:  # noqa: BLE001
                fail(path, err)
                bar.update(1)
                continue
            item.update(path=path, files=files)
            key = (tuple(item["y"].shape[1:]), tuple((item["x"] if item["x"] is not None else item["y"]).shape))
            pending.setdefault(key, []).append(item)
            if len(pending[key]) >= args.batch_size:
                flush(key)
        for key in list(pending):
            flush(key)
    finally:
        bar.close()
    done = len(plan) - len(failures)
    if failures:
        print(f"zsir: {len(failures)} of {len(plan)} input(s) failed:", file=sys.stderr)
        for path, msg in failures:
            print(f"  {path}: {msg}", file=sys.stderr)
        return 1
    _note(f"restored {done} image(s) into {args.output}")
    return 0


# ----- bench --------------------------------------------------------------------------------------------------
def _centre_crop(x: Tensor, size: int | None, factor: int) -> Tensor:
    h, w = x.shape[-2:]
    if size is not None:
        h, w = min(h, size), min(w, size)
    h, w = h - h % factor, w - w % factor
    top, left = (x.shape[-2] - h) // 2, (x.shape[-1] - w) // 2
    return x[..., top : top + h, left : left + w]


def _fmt(v: float | None, digits: int = 3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _cmd_bench(args) -> int:
    samplers = [_sampler_class(s.strip()).name for s in args.samplers.split(",") if s.strip()]
    tasks = [_task(t.strip()) for t in args.tasks.split(",") if t.strip()]
    if not samplers or not tasks:
        raise UsageError("--tasks and --samplers: expected comma-separated names")
    params = dict(args.param)
    for s in samplers:
        _check_params(_sampler_class(s), params, None)
    if not args.dataset.is_dir():
        raise UsageError(f"--dataset: {args.dataset} is not a folder")
    images = _images_in([args.dataset])[: args.limit]
    md, csv_path = args.output / "bench.md", args.output / "bench.csv"
    for p in (md, csv_path):
        if p.exists() and not args.overwrite:
            raise UsageError(f"output file already exists: {p}; pass --overwrite to replace it")
    pd = 0.5 if args.pd is None else args.pd
    device = _device(args.device)
    setup = _Setup("", _load_prior(args.prior, device, args.dtype), args.prior, device, params)
    clean = [(p, zio.read_image(p, channels=setup.prior.channels)) for p in images]

    rows, failures, unavailable = [], [], {}
    bar = tqdm(total=len(tasks) * len(samplers) * len(clean), desc="zsir bench", unit="run",
               disable=args.no_progress)
    for task in tasks:
        for sampler in samplers:
            setup.sampler = sampler
            acc: dict[str, list[float]] = {k: [] for k in _BENCH_COLUMNS[3:]}
            for path, img in clean:
                try:
                    x = _centre_crop(img, args.crop, task.factor)
                    op, y = _simulate(x, task, args.sigma_y, args.seed)
                    res = _solve(y, op, setup, args, args.steps, pd)
                    metrics, why = _score(res.x.cpu(), x)
                except Exception as err:  # noqa: BLE001 (reported, the bench goes on)
                    failures.append(f"{task.name}/{sampler}/{path.name}: {type(err).__name__}: {err}")
                    tqdm.write(f"zsir: error: {failures[-1]}", file=sys.stderr)
                    bar.update(1)
                    continue
                unavailable.update(why)
                for k in ("psnr", "ssim", "lpips", "haarpsi", "mdsi"):
                    acc[k].append(math.nan if metrics[k] is None else metrics[k])
                acc["nfe"].append(float(res.nfe))
                acc["seconds"].append(res.seconds)
                bar.update(1)
            n = len(acc["nfe"])
            mean = {k: (sum(v) / n if n else None) for k, v in acc.items()}
            rows.append({"task": task.name, "sampler": sampler, "images": n, **mean})
    bar.close()

    head = (f"zsir {zsir.__version__} bench: {len(clean)} image(s) from {args.dataset}, prior {args.prior}, "
            f"sigma_y {args.sigma_y:g} ([0, 1] units), pd {pd:g}, steps {args.steps or 'sampler default'}, "
            f"seed {args.seed}, device {device}")
    names = ["task", "sampler", "images", "PSNR", "SSIM", "LPIPS", "HaarPSI", "MDSI", "NFE", "s/image"]
    lines = [head, "", "| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for r in rows:
        cells = [r["task"], r["sampler"], str(r["images"]), _fmt(r["psnr"], 2), _fmt(r["ssim"]), _fmt(r["lpips"]),
                 _fmt(r["haarpsi"]), _fmt(r["mdsi"]), _fmt(r["nfe"], 0), _fmt(r["seconds"], 2)]
        lines.append("| " + " | ".join(cells) + " |")
    if unavailable:
        lines += [""] + [f"- {k} n/a: {v}" for k, v in sorted(unavailable.items())]
    if failures:
        lines += ["", "Failed runs:"] + [f"- {f}" for f in failures]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=_BENCH_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if v is None or (isinstance(v, float) and math.isnan(v)) else v) for k, v in r.items()})
    args.output.mkdir(parents=True, exist_ok=True)
    zio.write_text(md, "\n".join(lines) + "\n")
    zio.write_text(csv_path, buf.getvalue())
    print("\n".join(lines))
    return 1 if failures else 0


# ----- priors, train-prior ------------------------------------------------------------------------------------
def _cmd_priors(args) -> int:
    from zsir.priors import list_priors

    rows = [
        [r["name"], "yes" if r["cached"] else "no", r["size"], r["source"], r["description"]] for r in list_priors()
    ]
    head = ["name", "cached", "size", "source", "description"]
    widths = [max(len(str(row[i])) for row in [head, *rows]) for i in range(4)]
    for row in [head, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row[:4], widths, strict=True)) + "  " + row[4])
    return 0


def _train_prior(argv: list[str]) -> int:
    from zsir.models.train import main as train_main

    return int(train_main(argv) or 0)


# ----- entry point --------------------------------------------------------------------------------------------
def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    tqdm.write(f"zsir: warning: {message}", file=sys.stderr)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``zsir`` command line with ``argv`` (default ``sys.argv[1:]``); returns the exit code.

    Exit codes: 0 success, 1 some inputs failed (or a runtime error), 2 usage error, 130 interrupted.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    commands = [a for a in argv if not a.startswith("-")]
    if commands and commands[0] == "train-prior":
        rest = argv[argv.index("train-prior") + 1 :]
        return _train_prior(rest)
    in_main = threading.current_thread() is threading.main_thread()
    old_term = signal.signal(signal.SIGTERM, _raise_interrupt) if in_main else None
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            args = build_parser().parse_args(argv)
            return args.func(args)
    except UsageError as err:
        print(f"zsir: error: {err}", file=sys.stderr)
        return 2
    except SystemExit as err:  # --help / --version
        return err.code if isinstance(err.code, int) else 0
    except KeyboardInterrupt:
        print(f"zsir: interrupted after {time.perf_counter() - start:.0f} s; written outputs are complete (rerun "
              "with --resume to continue)", file=sys.stderr)
        return 130
    except Exception as err:
        if debug:
            raise
        print(f"zsir: error: {err}", file=sys.stderr)
        return 1
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, old_term)
