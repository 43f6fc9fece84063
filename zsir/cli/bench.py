"""``zsir bench``: score samplers on a folder of clean images (simulate mode), one markdown table and a CSV."""

from __future__ import annotations

import csv
import io
import math
import sys
from pathlib import Path

from torch import Tensor
from tqdm.auto import tqdm

import zsir
from zsir import io as zio
from zsir.cli.common import (
    HelpFormatter,
    Setup,
    UsageError,
    add_solver_options,
    check_params,
    device_from,
    images_in,
    load_prior,
    positive_int,
    sampler_class,
    score,
    simulate,
    solve,
    task_from,
)

_BENCH_COLUMNS = ["task", "sampler", "images", "psnr", "ssim", "lpips", "haarpsi", "mdsi", "nfe", "seconds"]


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
    md, csv_path = args.output / "bench.md", args.output / "bench.csv"
    for p in (md, csv_path):
        if p.exists() and not args.overwrite:
            raise UsageError(f"output file already exists: {p}; pass --overwrite to replace it")
    pd = 0.5 if args.pd is None else args.pd
    device = device_from(args.device)
    setup = Setup("", load_prior(args.prior, device, args.dtype, args.prior_config), args.prior, device, params)
    clean = [(p, zio.read_image(p, channels=setup.prior.channels)) for p in images]

    rows, failures, unavailable = [], [], {}
    bar = tqdm(total=len(tasks) * len(samplers) * len(clean), desc="zsir bench", unit="run", disable=args.no_progress)
    for task in tasks:
        for sampler in samplers:
            setup.sampler = sampler
            acc: dict[str, list[float]] = {k: [] for k in _BENCH_COLUMNS[3:]}
            for path, img in clean:
                try:
                    x = _centre_crop(img, args.crop, task.factor)
                    op, y = simulate(x, task, args.sigma_y, args.seed)
                    res = solve(y, op, setup, args, args.steps, pd)
                    metrics, why = score(res.x.cpu(), x)
                except Exception as err:
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

    head = (
        f"zsir {zsir.__version__} bench: {len(clean)} image(s) from {args.dataset}, prior {args.prior}, "
        f"sigma_y {args.sigma_y:g} ([0, 1] units), pd {pd:g}, steps {args.steps or 'sampler default'}, "
        f"seed {args.seed}, device {device}"
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
