"""zsir restore: restore image files.

zsir restore INPUT... -o OUT --task sr4 restores image files (or every image in folders). Two modes:

  measured (default)  each input IS the degraded image (a real photo); the operator comes from --task and its
                      files. For sr4 the input is the low-resolution image and the output is 4x larger; for
                      inpainting the holes come from inpaint-mask:FILE (or the centred box of inpaint-box); for
                      colorize the input is grey. Random operators (deblur-motion, inpaint-random) need
                      --simulate.
  --simulate          each input is a clean image; zsir degrades it (operator + seeded Gaussian noise of std
                      --sigma-y), restores it and scores the restoration against it. A clean image whose size is
                      not divisible by the SR factor is an error (zsir never crops silently).

Per input NAME.* it writes the set OUT/NAME.png (the restoration; with --num-samples K > 1 the mean of the
samples, each sample as NAME_s<k>.png), OUT/NAME_grid.png (measurement | restoration | ground truth) and
OUT/NAME.json (metrics, NFE, seconds, every parameter, zsir's version). A set appears all at once: its files are
written to hidden temporary files first and renamed into place with NAME.json last, the mark of a complete set.
Existing outputs are never replaced without --overwrite. --resume keeps complete sets made with the same
parameters, redoes incomplete ones, removes temporary files left by a killed run, and refuses when the finished
sets were made with other parameters. The output folder is checked for write access and space before any
restoration. A failing input is reported and the batch goes on; the exit code is then 1. Usage errors exit
with 2, an interruption (Ctrl-C, SIGTERM) with 130.

Seeds and processes: input NAME.* draws from its own seed, a stable hash of --seed and its file name
(zsir.cli.distributed.image_seed); a batch of --batch-size inputs draws from its first input's seed, and batches
are cut from the full input list, so the outputs never depend on which inputs are skipped or on the number of
processes. accelerate launch -m zsir restore ... shares the inputs between processes (zsir.cli.distributed).

Every restoration goes through zsir.solve.
"""

from __future__ import annotations

import json
import sys
import time
from itertools import compress
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

import zsir
from zsir import io as zio
from zsir.cli import distributed, outputs
from zsir.cli.common import (
    HelpFormatter,
    Setup,
    UsageError,
    add_solver_options,
    check_params,
    images_in,
    jsonable,
    load_prior,
    load_prior_params,
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
        description=__doc__.split("\n", 2)[2],
        formatter_class=HelpFormatter,
    )
    r.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="image files or folders")
    r.add_argument("--task", required=True, help=f"one of: {', '.join(TASK_NAMES)}")
    r.add_argument("--sampler", default="rdmd", help="rdmd, cm4ir, ddrm, ddnm, ddnm+, diffpir, dps or pnp")
    add_solver_options(r)
    r.add_argument(
        "--preset",
        default=None,
        help="a named setting of the sampler (published, or tuned-* for the built-in prior), or an entry of "
        "--presets (default: none)",
    )
    r.add_argument(
        "--presets",
        type=Path,
        default=None,
        metavar="FILE",
        help="preset file of zsir tune: use its entry for this sampler, task, sigma_y and prior (or --preset NAME) "
        "(default: none)",
    )
    r.add_argument("--num-samples", type=positive_int, default=1, help="posterior samples per input")
    r.add_argument("--batch-size", type=positive_int, default=1, help="same-size inputs restored per solve call")
    r.add_argument(
        "--simulate",
        action="store_true",
        help="inputs are clean: degrade them, restore, and score against them (default: measured mode)",
    )
    r.add_argument(
        "--resume",
        action="store_true",
        help="keep complete output sets made with the same parameters, redo the rest (default: off)",
    )
    r.add_argument("--bit-depth", type=int, choices=[8, 16], default=8, help="bits per sample of the restored PNG")
    r.set_defaults(func=run)


def _prepare(path: Path, task: Task, args, channels: int) -> dict[str, Any]:
    """Read one input and build its measurement: {y, op, x (ground truth or None), seed (the image's own)}."""
    seed = distributed.image_seed(args.seed, path.name)
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
        op, y = simulate(x, task, args.sigma_y, seed)
        return {"x": x, "y": y, "op": op, "seed": seed}
    want = 1 if task.kind == "colorize" else channels
    if raw.shape[1] != want:
        note(
            f"{path}: {raw.shape[1]}-channel input converted to {want} channel(s) "
            f"({'channel mean' if want == 1 else 'grey replicated'})"
        )
    y = zio.to_channels(raw, want)
    op = task.operator(task.x_size(tuple(y.shape[-2:])), seed=seed)
    op.check_y(y)
    if task.kind == "inpaint":
        y = op.A(y)  # whatever the file holds in the holes is not a measurement
    return {"x": None, "y": y, "op": op, "seed": seed}


def _write_set(item: dict[str, Any], samples: Tensor, res, args, task: Task, setup: Setup, batch: int) -> None:
    """Encode one input's set and publish it all at once (:func:`zsir.cli.outputs.publish`)."""
    files: dict[str, Path] = item["files"]
    x_hat = samples.mean(0, keepdim=True) if samples.shape[0] > 1 else samples[:1]
    contents = {"restored": zio.image_bytes(x_hat, ".png", args.bit_depth)}
    label = f"{setup.sampler} " + (f"pd={args.pd:g}" if args.pd is not None else f"preset {args.preset}")
    panels = [(f"measurement ({task.name}, sigma_y {args.sigma_y:g})", item["y"][0]), (label, x_hat[0])]
    if item["x"] is not None:
        panels.append(("ground truth", item["x"][0]))
    contents["grid"] = zio.grid_image(panels, tuple(x_hat.shape[-2:]))
    for k in range(samples.shape[0] if samples.shape[0] > 1 else 0):
        contents[f"sample{k}"] = zio.image_bytes(samples[k : k + 1], ".png", args.bit_depth)
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
        "pd_anchor": res.pd_anchor,
        "preset": args.preset,
        "preset_file": str(args.presets) if args.presets else None,
        "steps": res.steps,
        "seed": args.seed,
        "image_seed": item["seed"],
        "num_samples": args.num_samples,
        "batch_size": batch,
        "device": str(setup.device),
        "dtype": args.dtype,
        "bit_depth": args.bit_depth,
        "params": jsonable({**res.params, **setup.param_names}),
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
        "request": item["request"],
    }
    contents["json"] = (json.dumps(record, indent=2) + "\n").encode()
    outputs.publish(files, contents)


def _preset_from_file(args, sampler: str, task: Task):
    """The entry of ``--presets`` for this run (named by ``--preset`` or matched); sets ``args.preset`` to its name."""
    from zsir.tune import find_preset, load_presets

    try:
        entry = find_preset(
            load_presets(args.presets),
            sampler,
            name=args.preset,
            task=task.name,
            sigma_y=args.sigma_y,
            prior=args.prior,
        )
    except (ValueError, FileNotFoundError) as err:
        raise UsageError(f"--presets: {err}") from None
    args.preset = entry.name
    return entry.preset


def run(args) -> int:
    sampler_cls = sampler_class(args.sampler)
    params = dict(args.param)
    task = task_from(args.task)
    check_params(sampler_cls, params, None if args.presets else args.preset)
    preset = _preset_from_file(args, sampler_cls.name, task) if args.presets else args.preset
    if task.random and not args.simulate:
        alt = "inpaint-mask:FILE" if task.kind == "inpaint" else "deblur-kernel:FILE"
        raise UsageError(
            f"--task {task.name} draws a random operator, which only makes sense with --simulate; for "
            f"a real degraded photo pass the actual one with --task {alt}"
        )
    pd = 0.5 if args.pd is None and args.preset is None else args.pd
    args.pd = pd
    inputs = images_in(args.inputs)
    procs = distributed.processes(args)
    wanted = outputs.request(args, sampler_cls.name, task.name)
    plan = outputs.plan(inputs, args.output, wanted, resume=args.resume, overwrite=args.overwrite)
    if plan.cleared:
        note(f"removed {plan.cleared} temporary file(s) left by an interrupted run")
    if not plan.todo:
        note(f"all {len(inputs)} input(s) are complete in {args.output} (--resume); nothing to do")
        return 0
    factor = 1 if args.simulate else task.factor
    todo = [path for path, _ in plan.todo]
    if procs.is_main:  # one probe: another process's probe could remove the folder it created under this one
        outputs.check_writable(args.output, outputs.estimate_bytes(todo, factor, args.num_samples, args.bit_depth))
    procs.wait()  # every process planned (and cleared its leftovers) and the folder was probed before any writes
    device = procs.device
    prior = load_prior(args.prior, device, args.dtype, args.prior_config)
    params, param_names = load_prior_params(sampler_cls, params, device, args.dtype)
    setup = Setup(sampler_cls.name, prior, args.prior, device, params, param_names)
    try:
        setup.prior.check_tiling(args.tile, args.tile_overlap)
    except ValueError as err:
        raise UsageError(f"--{str(err).replace('_', '-')}") from None
    args.output.mkdir(parents=True, exist_ok=True)

    failures: list[tuple[Path, str]] = []
    pending: dict[tuple, list[dict[str, Any]]] = {}
    bar = tqdm(total=len(plan.todo), desc="zsir restore", unit="image", disable=args.no_progress)
    start = time.perf_counter()

    def fail(path: Path, err: BaseException) -> None:
        failures.append((path, f"{type(err).__name__}: {err}"))
        msg = str(err) if str(path) in str(err) else f"{path}: {err}"
        tqdm.write(f"zsir: error: {msg}", file=sys.stderr)
        if args.debug:
            raise err

    def flush(key: tuple) -> None:
        items = pending.pop(key)
        todo = [it["files"] is not None for it in items]  # the others are finished: restored again only to keep
        if not any(todo):  # their batch the same (--resume)
            return
        try:
            y = torch.cat([it["y"] for it in items])
            res = solve(
                y, items[0]["op"], setup, args, args.steps, pd, preset, args.num_samples, items[0]["seed"], task
            )
        except Exception as err:
            for it in compress(items, todo):
                fail(it["path"], err)
            return
        for b, it in enumerate(items):
            if not todo[b]:
                continue
            try:
                _write_set(it, res.samples[:, b].cpu(), res, args, task, setup, len(items))
            except Exception as err:
                fail(it["path"], err)

    try:
        for chunk in procs.run(distributed.chunks(inputs, plan.todo, args.batch_size), bar, distributed.to_do):
            for path, files in chunk:
                try:
                    item = _prepare(path, task, args, setup.prior.channels)
                except Exception as err:
                    if files is not None:
                        fail(path, err)
                    continue
                item.update(path=path, files=files, request=wanted)
                key = (tuple(item["y"].shape[1:]), tuple((item["x"] if item["x"] is not None else item["y"]).shape))
                if task.random:  # one operator per image
                    key += (item["seed"],)
                pending.setdefault(key, []).append(item)
            for key in list(pending):
                flush(key)
    finally:
        bar.close()
    failures = procs.gather(failures)
    summary = procs.summary(len(plan.todo) - len(failures), time.perf_counter() - start)
    if not procs.is_main:
        return 1 if failures else 0
    note(f"restored into {args.output}: {summary}")
    if failures:
        print(f"zsir: {len(failures)} of {len(plan.todo)} input(s) failed:", file=sys.stderr)
        for path, msg in failures:
            print(f"  {path}: {msg}", file=sys.stderr)
        return 1
    return 0
