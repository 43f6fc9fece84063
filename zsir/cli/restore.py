r"""``zsir restore``: restore image files.

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
import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

import zsir
from zsir import io as zio
from zsir.cli.common import (
    Setup,
    UsageError,
    add_solver_options,
    check_params,
    device_from,
    images_in,
    jsonable,
    load_prior,
    note,
    positive_int,
    sampler_class,
    score,
    simulate,
    solve,
    task_from,
)
from zsir.tasks import TASK_NAMES, Task


def add_parser(sub) -> None:
    r = sub.add_parser(
        "restore",
        help="restore image files",
        description=__doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="image files or folders")
    r.add_argument("--task", required=True, help=f"one of: {', '.join(TASK_NAMES)}")
    r.add_argument("--sampler", default="rdmd", help="rdmd, cm4ir, ddrm, ddnm, ddnm+, diffpir, dps, pnp")
    add_solver_options(r)
    r.add_argument("--preset", default=None, help="a named published setting of the sampler")
    r.add_argument("--num-samples", type=positive_int, default=1, help="posterior samples per input")
    r.add_argument("--batch-size", type=positive_int, default=1, help="same-size inputs restored per solve call")
    r.add_argument(
        "--simulate", action="store_true", help="inputs are clean: degrade them, restore, and score against them"
    )
    r.add_argument("--resume", action="store_true", help="skip inputs whose outputs are complete")
    r.add_argument("--bit-depth", type=int, choices=[8, 16], default=8, help="bits per sample of the restored PNG")
    r.set_defaults(func=run)


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
            raise UsageError(
                f"inputs {by_stem[path.stem]} and {path} would write the same outputs ({path.stem}.png); rename one"
            )
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
        raise UsageError(
            f"output file(s) already exist: {shown}; pass --overwrite to replace them or --resume to "
            "skip finished inputs"
        )
    return plan


def _prepare(path: Path, task: Task, args, channels: int) -> dict[str, Any]:
    """Read one input and build its measurement: {y, op, x (ground truth or None), key}."""
    raw = zio.read_image(path)
    if args.simulate:
        if float(raw.min()) < 0 or float(raw.max()) > 1:
            raise ValueError(f"{path}: a ground-truth image must lie in [0, 1], got [{raw.min():.3g}, {raw.max():.3g}]")
        if task.kind == "colorize":
            x = raw  # simulate checks that it is RGB
        else:
            if raw.shape[1] != channels:
                note(f"{path}: {raw.shape[1]}-channel image converted to {channels} channel(s) for the prior")
            x = zio.to_channels(raw, channels)
        op, y = simulate(x, task, args.sigma_y, args.seed)
        return {"x": x, "y": y, "op": op}
    want = 1 if task.kind == "colorize" else channels
    if raw.shape[1] != want:
        note(
            f"{path}: {raw.shape[1]}-channel input converted to {want} channel(s) "
            f"({'channel mean' if want == 1 else 'grey replicated'})"
        )
    y = zio.to_channels(raw, want)
    op = task.operator(task.x_size(tuple(y.shape[-2:])), seed=args.seed)
    op.check_y(y)
    if task.kind == "inpaint":
        y = op.A(y)  # whatever the file holds in the holes is not a measurement
    return {"x": None, "y": y, "op": op}


def _write_outputs(item: dict[str, Any], samples: Tensor, res, args, task: Task, setup: Setup, batch: int) -> None:
    """Write one input's outputs; if any write fails, the ones written before it are removed again."""
    try:
        _write_set(item, samples, res, args, task, setup, batch)
    except BaseException:
        for p in item["files"].values():
            p.unlink(missing_ok=True)
        raise


def _write_set(item: dict[str, Any], samples: Tensor, res, args, task: Task, setup: Setup, batch: int) -> None:
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
    metrics, unavailable = score(x_hat, item["x"]) if item["x"] is not None else (None, {})
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
        "params": jsonable(res.params),
        "tiling": jsonable(res.tiling),
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


def run(args) -> int:
    sampler_cls = sampler_class(args.sampler)
    params = dict(args.param)
    check_params(sampler_cls, params, args.preset)
    task = task_from(args.task)
    if task.random and not args.simulate:
        alt = "inpaint-mask:FILE" if task.kind == "inpaint" else "deblur-kernel:FILE"
        raise UsageError(
            f"--task {task.name} draws a random operator, which only makes sense with --simulate; for "
            f"a real degraded photo pass the actual one with --task {alt}"
        )
    pd = 0.5 if args.pd is None and args.preset is None else args.pd
    args.pd = pd
    inputs = images_in(args.inputs)
    plan = _plan(args, inputs)
    if not plan:
        note(f"all {len(inputs)} input(s) are complete in {args.output} (--resume); nothing to do")
        return 0
    device = device_from(args.device)
    setup = Setup(sampler_cls.name, load_prior(args.prior, device, args.dtype), args.prior, device, params)
    try:
        setup.prior.check_tiling(args.tile, args.tile_overlap)
    except ValueError as err:
        raise UsageError(f"--{str(err).replace('_', '-')}") from None
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
            res = solve(y, items[0]["op"], setup, args, args.steps, pd, args.preset, args.num_samples)
        except Exception as err:
            for it in items:
                fail(it["path"], err)
            bar.update(len(items))
            return
        for b, it in enumerate(items):
            try:
                _write_outputs(it, res.samples[:, b].cpu(), res, args, task, setup, len(items))
            except Exception as err:
                fail(it["path"], err)
            bar.update(1)

    try:
        for path, files in plan:
            try:
                item = _prepare(path, task, args, setup.prior.channels)
            except Exception as err:
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
    note(f"restored {done} image(s) into {args.output}")
    return 0
