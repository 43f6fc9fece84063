"""The perception-distortion knob measured: PSNR and HaarPSI at several ``pd`` per sampler and task, on held-out images.

For every task, sampler and ``pd`` it restores centre crops of validation images (CBSD68 from the 10th image on by
default: the tuned presets searched and scored the first nine, see their ``search_images`` / ``heldout_images``)
through :func:`zsir.solve` with ``task=`` set, so ``pd`` starts from the preset tuned for the sampler, prior and
task where one exists (``--mapping anchored``, what ``zsir restore`` does) or uses the sampler's generic mapping
(``--mapping generic``). Measurements are seeded as in ``zsir tune`` (operator seed ``seed + i``, noise seed
``seed + 1000 + i`` for the ``i``-th image) and the sampler draws from ``seed``.

It prints a Markdown table per task (``PSNR / HaarPSI`` per ``pd``, the anchor preset, and whether PSNR falls
monotonically as ``pd`` grows) and writes every number to ``--json`` after each sampler, so an interrupted run
keeps what it measured (``--table FILE`` prints the tables of such a file again). LPIPS is added when its weights
are available (:class:`zsir.metrics.MetricUnavailable` otherwise; the table says so).

Examples::

    python benchmarks/pd.py --images 3 --size 64 --dps-steps 50 --json pd.json
    python benchmarks/pd.py --samplers pnp ddrm --tasks sr4 --mapping generic
    python benchmarks/pd.py --prior ffdnet --json pd-ffdnet.json
    python benchmarks/pd.py --files builtin-validation --start 7 --images 3   # the 3 that zsir tune held out
    python benchmarks/pd.py --table pd.json [--compact]   # --compact: PSNR (HaarPSI) at pd 0 / 0.5 / 1, g = generic
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

import zsir
from zsir import metrics as zmetrics
from zsir.io import centre_crop, read_image
from zsir.samplers import SAMPLERS as REGISTRY
from zsir.samplers.pd import find_anchor
from zsir.tasks import parse_task
from zsir.tune import dataset_files

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cbsd68"
SAMPLERS = ["rdmd", "cm4ir", "ddrm", "ddnm+", "diffpir", "pnp", "dps"]
TASKS = ["sr4", "deblur-gauss", "deblur-motion", "inpaint-random"]
PDS = [0.0, 0.25, 0.5, 0.75, 1.0]


def crops(
    folder: Path, start: int, count: int, size: int, factor: int, names: list[str] | None = None
) -> list[tuple[str, torch.Tensor]]:
    """Centre crops ``size x size`` (a multiple of ``factor``) of the images ``start .. start + count - 1`` of
    ``folder`` sorted by name, or of only the ``names`` among them (file names, or a key of
    :data:`zsir.tune.FILE_SETS` such as ``builtin-validation``)."""
    files = dataset_files(folder, names)[start : start + count]
    if len(files) < count:
        raise SystemExit(f"--data: {folder} has {len(files)} selected image(s) from index {start}, fewer than {count}")
    return [(p.name, centre_crop(read_image(p, channels=3), size, factor)) for p in files]


def measure(args, prior, task_name: str, sampler: str, images) -> dict:
    """Mean PSNR / HaarPSI (/ LPIPS) at every ``pd`` for one sampler and task."""
    task = parse_task(task_name)
    rows, anchor, lpips_note = {}, None, None
    anchored = args.mapping == "anchored" and find_anchor(REGISTRY.get(sampler), prior, task, args.sigma_y)
    steps = args.dps_steps if sampler == "dps" and not anchored else None  # a tuned preset brings its own steps
    for pd in args.pd:
        scores = {"psnr": [], "haarpsi": [], "lpips": []}
        nfe = seconds = 0.0
        for i, (_, x) in enumerate(images):
            op = task.operator(tuple(x.shape[-2:]), seed=args.seed + i)
            y = op.A(x)
            g = torch.Generator().manual_seed(args.seed + 1000 + i)
            y = y + args.sigma_y * torch.randn(y.shape, generator=g, dtype=y.dtype)
            res = zsir.solve(
                y,
                op,
                sampler=sampler,
                prior=prior,
                sigma_y=args.sigma_y,
                pd=pd,
                steps=steps,
                generator=args.seed,
                progress=False,
                return_result=True,
                task=task if args.mapping == "anchored" else None,
            )
            anchor, nfe, seconds = res.pd_anchor, nfe + res.nfe, seconds + res.seconds
            scores["psnr"].append(float(zmetrics.psnr(res.x, x).mean()))
            scores["haarpsi"].append(float(zmetrics.haarpsi(res.x, x).mean()))
            try:
                scores["lpips"].append(float(zmetrics.lpips(res.x, x).mean()))
            except zmetrics.MetricUnavailable as err:
                lpips_note = str(err)
        n = len(images)
        rows[f"{pd:g}"] = {k: (sum(v) / n if v else None) for k, v in scores.items()}
        rows[f"{pd:g}"].update(nfe=nfe / n, seconds=seconds / n)
    return {"anchor": anchor, "pd": rows, "lpips_unavailable": lpips_note}


def monotone(psnrs: list[float], tol: float = 0.0) -> bool:
    """PSNR never rises by more than ``tol`` dB as pd grows."""
    return all(b <= a + tol for a, b in zip(psnrs, psnrs[1:], strict=False))


def tables(data: dict) -> str:
    """Markdown: one table per task, a row per sampler, ``PSNR / HaarPSI`` per pd."""
    out = []
    meta = data["meta"]
    for task, per_sampler in data["results"].items():
        pds = list(next(iter(per_sampler.values()))["pd"])
        head = ["sampler", "pd 0 from", *[f"pd {p}" for p in pds], "PSNR monotone", "NFE (pd 0)"]
        lines = [f"**{task}** (sigma_y {meta['sigma_y']:g}, prior {meta['prior']}, {meta['mapping']} mapping)", ""]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for sampler, r in per_sampler.items():
            cells = [f"{r['pd'][p]['psnr']:.2f} / {r['pd'][p]['haarpsi']:.3f}" for p in pds]
            psnrs = [r["pd"][p]["psnr"] for p in pds]
            rise = max((b - a for a, b in zip(psnrs, psnrs[1:], strict=False)), default=0.0)
            mono = "yes" if monotone(psnrs) else f"no (+{rise:.2f} dB)"
            nfe = r["pd"][pds[0]]["nfe"]
            lines.append(f"| {sampler} | {r['anchor'] or 'generic'} | {' | '.join(cells)} | {mono} | {nfe:.0f} |")
        out.append("\n".join(lines))
    notes = {r["lpips_unavailable"] for t in data["results"].values() for r in t.values() if r["lpips_unavailable"]}
    if notes:
        out.append(f"LPIPS: not measured ({sorted(notes)[0]})")
    return "\n\n".join(out)


def compact(data: dict, pds: tuple[str, ...] = ("0", "0.5", "1")) -> str:
    """Markdown: a row per sampler, a column per task, ``PSNR at pd 0 / 0.5 / 1 (HaarPSI ...)`` per cell."""
    tasks = list(data["results"])
    samplers = list(dict.fromkeys(s for t in tasks for s in data["results"][t]))
    lines = ["| sampler | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for sampler in samplers:
        cells = []
        for t in tasks:
            r = data["results"][t].get(sampler)
            if r is None or not all(p in r["pd"] for p in pds):
                cells.append("")
                continue
            psnr = " / ".join(f"{r['pd'][p]['psnr']:.2f}" for p in pds)
            haar = " / ".join(f"{r['pd'][p]['haarpsi']:.3f}" for p in pds)
            cells.append(f"{psnr} ({haar}){'' if r['anchor'] else ' g'}")
        lines.append(f"| {sampler} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DATA, help="folder of clean validation images (default: CBSD68)")
    ap.add_argument(
        "--files",
        nargs="+",
        default=None,
        help="only these files of --data (names, or builtin-validation: the built-in prior's validation images); "
        "--start and --images then count among them",
    )
    ap.add_argument("--start", type=int, default=9, help="index of the first image (sorted by name)")
    ap.add_argument("--images", type=int, default=3, help="number of images")
    ap.add_argument("--size", type=int, default=64, help="side of the centre crops in pixels")
    ap.add_argument("--tasks", nargs="+", default=TASKS)
    ap.add_argument("--samplers", nargs="+", default=SAMPLERS)
    ap.add_argument("--pd", nargs="+", type=float, default=PDS)
    ap.add_argument("--prior", default="builtin")
    ap.add_argument("--sigma-y", type=float, default=0.05, help="measurement noise std, [0, 1] image units")
    ap.add_argument("--mapping", choices=("anchored", "generic"), default="anchored")
    ap.add_argument(
        "--dps-steps",
        type=int,
        default=50,
        help="DPS steps where no tuned preset sets them (its default 1000 is too slow on a CPU)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="write the numbers here (after every sampler)")
    ap.add_argument("--table", type=Path, default=None, help="only print the tables of a --json file")
    ap.add_argument("--compact", action="store_true", help="with --table: one table, pd 0 / 0.5 / 1 per task")
    args = ap.parse_args()
    if args.table is not None:
        data = json.loads(args.table.read_text())
        print(compact(data) if args.compact else tables(data))
        return
    prior = zsir.load_prior(args.prior)
    meta = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    meta["zsir_version"] = zsir.__version__
    data = {"meta": meta, "results": {}}
    t0 = time.perf_counter()
    for task in args.tasks:
        factor = parse_task(task).factor
        images = crops(args.data, args.start, args.images, args.size, factor, args.files)
        data["meta"]["image_names"] = [n for n, _ in images]
        for sampler in args.samplers:
            r = measure(args, prior, task, sampler, images)
            data["results"].setdefault(task, {})[sampler] = r
            psnrs = [v["psnr"] for v in r["pd"].values()]
            print(f"{task} {sampler} anchor={r['anchor']} psnr={[round(p, 2) for p in psnrs]}", flush=True)
            data["meta"]["seconds"] = time.perf_counter() - t0
            if args.json is not None:
                args.json.write_text(json.dumps(data, indent=1) + "\n")
    print()
    print(tables(data))
    values = [v["psnr"] for t in data["results"].values() for r in t.values() for v in r["pd"].values()]
    if not all(math.isfinite(v) for v in values):
        raise SystemExit("a PSNR is not finite")


if __name__ == "__main__":
    main()
