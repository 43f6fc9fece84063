"""``zsir bench``: score samplers on a folder of clean images (simulate mode): ``bench.md`` (a summary and one
markdown table), ``bench.csv`` (the table) and ``bench_images.csv`` (one row per task, sampler and image).

Image ``NAME`` is degraded and restored with its own seed (:func:`zsir.cli.distributed.image_seed`), so the scores
are the same for any number of processes: ``accelerate launch -m zsir bench ...`` shares the (task, sampler, image)
runs between processes and gathers the scores onto the main process, which writes the files; the summary line
records the number of processes, their devices and the throughput.
"""

from __future__ import annotations

import csv
import io
import math
import sys
import time
from pathlib import Path

from torch import Tensor
from tqdm.auto import tqdm

import zsir
from zsir import io as zio
from zsir.cli import distributed
from zsir.cli.common import (
    HelpFormatter,
    Setup,
    UsageError,
    add_solver_options,
    check_params,
    images_in,
    load_prior,
    load_prior_params,
    positive_int,
    sampler_class,
    score,
    simulate,
    solve,
    task_from,
)

_BENCH_COLUMNS = ["task", "sampler", "images", "psnr", "ssim", "lpips", "haarpsi", "mdsi", "nfe", "seconds"]
_METRICS = ("psnr", "ssim", "lpips", "haarpsi", "mdsi")
_IMAGE_COLUMNS = ["task", "sampler", "image", "image_seed", *_METRICS, "nfe", "seconds"]


def add_parser(sub) -> None:
    b = sub.add_parser(
        "bench", help="score samplers on a folder of clean images (simulate mode)", formatter_class=HelpFormatter
    )
    b.add_argument("--dataset", required=True, type=Path, help="folder of clean images")
    b.add_argument("--tasks", required=True, help="comma-separated tasks, e.g. sr4,deblur-gauss")
    b.add_argument("--samplers", default="rdmd", help="comma-separated samplers, e.g. rdmd,ddrm")
    b.add_argument(
        "--limit", type=positive_int, default=None, help="use the first N images (sorted by name; default: all)"
    )
    b.add_argument(
        "--crop", type=positive_int, default=None, help="centre-crop images to CROP x CROP first (default: no crop)"
    )
    add_solver_options(b)
    b.set_defaults(func=run)


def _centre_crop(x: Tensor, size: int | None, factor: int) -> Tensor:
    h, w = x.shape[-2:]
    if size is not None:
        h, w = min(h, size), min(w, size)
    h, w = h - h % factor, w - w % factor
    top, left = (x.shape[-2] - h) // 2, (x.shape[-1] - w) // 2
    return x[..., top : top + h, left : left + w]


def _fmt(v: float | None, digits: int = 3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _csv(columns: list[str], rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if v is None or (isinstance(v, float) and math.isnan(v)) else v) for k, v in r.items()})
    return buf.getvalue()


def run(args) -> int:
    samplers = [sampler_class(s.strip()).name for s in args.samplers.split(",") if s.strip()]
    tasks = [task_from(t.strip()) for t in args.tasks.split(",") if t.strip()]
    if not samplers or not tasks:
        raise UsageError("--tasks and --samplers: expected comma-separated names")
    params = dict(args.param)
    for s in samplers:
        check_params(sampler_class(s), params, None)
    if not args.dataset.is_dir():
        raise UsageError(f"--dataset: {args.dataset} is not a folder")
    images = images_in([args.dataset])[: args.limit]
    md, csv_path, per_image = args.output / "bench.md", args.output / "bench.csv", args.output / "bench_images.csv"
    for p in (md, csv_path, per_image):
        if p.exists() and not args.overwrite:
            raise UsageError(f"output file already exists: {p}; pass --overwrite to replace it")
    pd = 0.5 if args.pd is None else args.pd
    procs = distributed.processes(args)
    device = procs.device
    for name in samplers:  # every sampler accepts each --param (checked above): load prior-valued ones once
        params = load_prior_params(sampler_class(name), params, device, args.dtype)[0]
    setup = Setup("", load_prior(args.prior, device, args.dtype, args.prior_config), args.prior, device, params)

    jobs = [(t, s, i) for t in range(len(tasks)) for s in range(len(samplers)) for i in range(len(images))]
    done, failures, unavailable = [], [], {}
    bar = tqdm(total=len(jobs), desc="zsir bench", unit="run", disable=args.no_progress)
    start = time.perf_counter()
    for job in procs.run(jobs, bar, size=lambda _: 1):
        task, sampler, path = tasks[job[0]], samplers[job[1]], images[job[2]]
        setup.sampler = sampler
        seed = distributed.image_seed(args.seed, path.name)
        try:
            x = _centre_crop(zio.read_image(path, channels=setup.prior.channels), args.crop, task.factor)
            op, y = simulate(x, task, args.sigma_y, seed)
            res = solve(y, op, setup, args, args.steps, pd, seed=seed, task=task)
            metrics, why = score(res.x.cpu(), x)
        except Exception as err:
            failures.append((job, f"{task.name}/{sampler}/{path.name}: {type(err).__name__}: {err}"))
            tqdm.write(f"zsir: error: {failures[-1][1]}", file=sys.stderr)
            continue
        unavailable.update(why)
        row = {"task": task.name, "sampler": sampler, "image": path.name, "image_seed": seed}
        row.update({k: math.nan if metrics[k] is None else metrics[k] for k in _METRICS})
        done.append((job, {**row, "nfe": float(res.nfe), "seconds": res.seconds}))
    bar.close()
    done = sorted(procs.gather(done), key=lambda d: d[0])  # the order of one process's loop
    failures = [msg for _, msg in sorted(procs.gather(failures))]
    unavailable = dict(kv for part in procs.gather([unavailable]) for kv in part.items())
    summary = procs.summary(len(done), time.perf_counter() - start)
    if not procs.is_main:
        return 1 if failures else 0

    rows = []
    for t, task in enumerate(tasks):
        for s, sampler in enumerate(samplers):
            runs = [r for (jt, js, _), r in done if (jt, js) == (t, s)]
            n = len(runs)
            mean = {k: (sum(r[k] for r in runs) / n if n else None) for k in _BENCH_COLUMNS[3:]}
            rows.append({"task": task.name, "sampler": sampler, "images": n, **mean})

    head = (
        f"zsir {zsir.__version__} bench: {len(images)} image(s) from {args.dataset}, prior {args.prior}, "
        f"sigma_y {args.sigma_y:g} ([0, 1] units), pd {pd:g} (from the tuned preset of each sampler and task where "
        f"one exists), steps {args.steps or 'sampler default'}, "
        f"seed {args.seed} (per image: zsir.cli.distributed.image_seed); {summary}"
    )
    names = ["task", "sampler", "images", "PSNR", "SSIM", "LPIPS", "HaarPSI", "MDSI", "NFE", "s/image"]
    lines = [head, "", "| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for r in rows:
        cells = [
            r["task"],
            r["sampler"],
            str(r["images"]),
            _fmt(r["psnr"], 2),
            _fmt(r["ssim"]),
            _fmt(r["lpips"]),
            _fmt(r["haarpsi"]),
            _fmt(r["mdsi"]),
            _fmt(r["nfe"], 0),
            _fmt(r["seconds"], 2),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if unavailable:
        lines += [""] + [f"- {k} n/a: {v}" for k, v in sorted(unavailable.items())]
    if failures:
        lines += ["", "Failed runs:"] + [f"- {f}" for f in failures]
    args.output.mkdir(parents=True, exist_ok=True)
    zio.write_text(md, "\n".join(lines) + "\n")
    zio.write_text(csv_path, _csv(_BENCH_COLUMNS, rows))
    zio.write_text(per_image, _csv(_IMAGE_COLUMNS, [r for _, r in done]))
    print("\n".join(lines))
    return 1 if failures else 0
