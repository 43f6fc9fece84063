"""Wall time and peak memory of ``zsir restore`` against the image size (CPU, built-in prior).

Each case runs ``zsir restore`` as a subprocess on a photograph (skimage's astronaut, resized to the size) in the
measured mode (no scoring, so the numbers are the restoration's): ``sr2`` restores a low-resolution input to the
size, ``deblur-kernel:FILE`` a motion-blurred one with its kernel. Peak RSS is the child's ``ru_maxrss``. The
sizes are those of the restored image, in megapixels (4:3). Goals (issue 14): time linear in the pixels (within
1.3x of linear from 1 to 12 MP) and peak memory flat once tiling engages (< 3 GB at 12 MP with the defaults).

Run from the repository root (a 12 MP case takes tens of minutes on one core: run it in the background)::

    nice python benchmarks/size.py --sizes 0.25 1 4 --samplers cm4ir rdmd --steps rdmd=5
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def photo(mp: float, tmp: Path) -> tuple[Path, Path, tuple[int, int]]:
    """(HR photo, its 2x-downscaled copy, (H, W)) of about ``mp`` megapixels, 4:3, sides multiples of 8."""
    from skimage import data

    h = int(round(math.sqrt(mp * 1e6 * 3 / 4) / 8)) * 8
    w = h * 4 // 3 // 8 * 8
    hr = Image.fromarray(data.astronaut()).resize((w, h), Image.BICUBIC)
    hr_path, lr_path = tmp / f"hr{mp:g}.png", tmp / f"lr{mp:g}.png"
    hr.save(hr_path)
    hr.resize((w // 2, h // 2), Image.BICUBIC).save(lr_path)
    return hr_path, lr_path, (h, w)


def blurred(hr_path: Path, kernel_path: Path, tmp: Path) -> Path:
    """The photo blurred by the kernel (circular, as the task's operator; the measurement is what is restored)."""
    import torch

    from zsir import io as zio
    from zsir.tasks import parse_task

    x = zio.read_image(hr_path)
    op = parse_task(f"deblur-kernel:{kernel_path}").operator(tuple(x.shape[-2:]))
    out = tmp / f"blur_{hr_path.name}"
    zio.write_image(out, op.A(x).clamp(0, 1).to(torch.float32))
    return out


def run(argv: list[str], threads: int) -> tuple[float, float, int]:
    """(seconds, peak RSS in GB, exit code) of ``python -m zsir`` with ``argv``."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    # outside the repository root: `python -m zsir` there would import the source tree, not the installed package
    p = subprocess.Popen(
        [sys.executable, "-m", "zsir", *argv], env=env, cwd=tempfile.gettempdir(), stderr=subprocess.PIPE, text=True
    )
    _, status, usage = os.wait4(p.pid, 0)
    seconds = time.perf_counter() - t0
    err = p.stderr.read() if p.stderr else ""
    if status:
        print(err[-2000:], file=sys.stderr)
    return seconds, usage.ru_maxrss * 1024 / 1e9, os.waitstatus_to_exitcode(status)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=float, nargs="+", default=[0.25, 1, 4, 12], help="megapixels")
    ap.add_argument("--samplers", nargs="+", default=["cm4ir", "rdmd"])
    ap.add_argument("--tasks", nargs="+", default=["sr2", "deblur-motion"], choices=["sr2", "deblur-motion"])
    ap.add_argument("--steps", nargs="*", default=[], metavar="SAMPLER=N", help="override steps, e.g. rdmd=5")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--extra", default="", help="more zsir restore options, e.g. '--max-memory 2'")
    args = ap.parse_args(argv)
    steps = dict(s.split("=") for s in args.steps)
    print("command: nice python benchmarks/size.py " + " ".join(sys.argv[1:] if argv is None else argv), flush=True)
    print("| sampler | task | MP | size | NFE | steps | seconds | s / MP | peak RSS GB | tile |", flush=True)
    print("|---|---|---|---|---|---|---|---|---|---|", flush=True)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        from zsir.operators import motion_kernel

        kernel = motion_kernel(31, generator=__import__("torch").Generator().manual_seed(0))
        np.save(tmp / "motion.npy", kernel.numpy())
        for mp in args.sizes:
            hr, lr, (h, w) = photo(mp, tmp)
            for task in args.tasks:
                if task == "sr2":
                    src, spec = lr, "sr2"
                else:
                    src, spec = blurred(hr, tmp / "motion.npy", tmp), f"deblur-kernel:{tmp / 'motion.npy'}"
                for sampler in args.samplers:
                    out = tmp / f"out_{sampler}_{task}_{mp:g}"
                    cmd = ["restore", str(src), "-o", str(out), "--task", spec, "--sampler", sampler, "--no-progress"]
                    if sampler in steps:
                        cmd += ["--steps", steps[sampler]]
                    cmd += args.extra.split()
                    sec, rss, rc = run(cmd, args.threads)
                    rec = {}
                    if rc == 0:
                        import json

                        rec = json.loads(next(out.glob("*.json")).read_text())
                    tiling = rec.get("tiling", {})
                    print(
                        f"| {sampler} | {task} | {h * w / 1e6:.2f} | {w}x{h} | {rec.get('nfe', '-')} | "
                        f"{rec.get('steps', '-')} | {sec:.1f} | {sec / (h * w / 1e6):.1f} | {rss:.2f} | "
                        f"{tiling.get('tile', '-')} |" + ("" if rc == 0 else f" failed (exit {rc})"),
                        flush=True,
                    )


if __name__ == "__main__":
    main()
