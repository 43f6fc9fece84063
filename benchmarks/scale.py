"""Throughput of ``zsir restore`` on 1 and N processes (``accelerate launch``), on the same images, in one run.

Every setting restores the same images (``--simulate``: degrade, restore, score) into its own folder. The table
gives zsir's own timing (its summary line: from the first restoration to the last output, without the start-up
and the prior loading), the images per second, the speed-up over one process, the wall time of the whole command
(start-up included), the CPU time of all its processes (launcher included) and whether the restored PNGs are
byte-identical to the one-process run (they must be: per-image seeds, see ``zsir.cli.distributed``).

CPU mode (default): ``--processes 1 2``, each process with ``--threads`` CPU threads (gloo between processes).
GPU mode (``--gpu``): one process per GPU, ``--processes 1 G`` with G the number of visible GPUs by default; each
process restores on its own ``cuda:LOCAL_RANK``.

The images are centre crops of scikit-image's photographs (``--size``), or the first ``--images`` files of
``--dataset DIR``.

Run::

    nice -n 10 .venv/bin/python benchmarks/scale.py [--processes 1 2] [--images 8] [--size 64] [--steps 10]
    .venv/bin/python benchmarks/scale.py --gpu [--images 64] [--size 256] [--batch-size 8]   # on a GPU machine
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

SUMMARY = re.compile(r"(\d+) process\(es\) on (.*?): (\d+) image\(s\) in ([\d.]+) s, ([\d.eE+-]+) images/s")


def make_images(folder: Path, count: int, size: int, dataset: Path | None) -> None:
    """``count`` RGB images of ``size`` x ``size`` in ``folder``."""
    folder.mkdir(parents=True)
    if dataset is not None:
        files = sorted(p for p in dataset.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"))
        if len(files) < count:
            raise SystemExit(f"--dataset: {dataset} has {len(files)} images, --images asks for {count}")
        sources = [np.asarray(Image.open(p).convert("RGB")) for p in files[:count]]
    else:
        from skimage import data

        photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
        sources = [photos[i % len(photos)] for i in range(count)]
    for i, img in enumerate(sources):
        h, w = img.shape[:2]
        side = min(h, w) - (i // 4) * 16  # different crops when the photographs repeat
        top, left = (h - side) // 2, (w - side) // 2
        crop = Image.fromarray(img[top : top + side, left : left + side]).resize((size, size), Image.LANCZOS)
        crop.save(folder / f"img{i:03d}.png")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(n: int, argv: list[str]) -> list[str]:
    if n == 1:
        return [sys.executable, "-m", "zsir", *argv]
    launch = ["--multi_gpu", "--num_processes", str(n), "--num_machines", "1", "--mixed_precision", "no"]
    launch += ["--dynamo_backend", "no", "--main_process_port", str(free_port())]
    return [sys.executable, "-m", "accelerate.commands.launch", *launch, "-m", "zsir", *argv]


def pngs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--processes", type=int, nargs="+", default=None, help="process counts (default: 1 2, or 1 G)")
    ap.add_argument("--gpu", action="store_true", help="one process per GPU (--device cuda)")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--size", type=int, default=64, help="image side in pixels")
    ap.add_argument("--dataset", type=Path, default=None, help="take the images from this folder")
    ap.add_argument("--task", default="sr2")
    ap.add_argument("--sampler", default="ddrm")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="CPU threads per process (OMP_NUM_THREADS)")
    args = ap.parse_args()
    if args.gpu:
        import torch

        gpus = torch.cuda.device_count()
        if gpus == 0:
            raise SystemExit("--gpu: no CUDA device is visible")
        processes = args.processes or sorted({1, gpus})
    else:
        processes = args.processes or [1, 2]

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1"}
    work = Path(tempfile.mkdtemp(prefix="zsir-scale-"))
    try:
        make_images(work / "in", args.images, args.size, args.dataset)
        rows, reference = [], None
        for n in processes:
            out = work / f"out{n}"
            argv = ["restore", str(work / "in"), "-o", str(out), "--simulate", "--task", args.task]
            argv += ["--sampler", args.sampler, "--steps", str(args.steps), "--batch-size", str(args.batch_size)]
            argv += ["--device", "cuda" if args.gpu else "cpu", "--no-progress"]
            t0, cpu0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
            proc = subprocess.run(command(n, argv), env=env, cwd=work, capture_output=True, text=True)
            wall, cpu1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
            found = SUMMARY.search(proc.stderr)
            if proc.returncode != 0 or found is None:
                raise SystemExit(f"{n} process(es) failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
            reference = reference or pngs(out)
            same = "yes" if pngs(out) == reference else "NO"
            summary = (found.group(2), int(found.group(3)), float(found.group(4)), float(found.group(5)))
            rows.append((n, *summary, wall, cpu, same))
        base = rows[0][4]
        print(
            f"{args.images} images {args.size}x{args.size}, --task {args.task} --simulate --sampler {args.sampler} "
            f"--steps {args.steps} --batch-size {args.batch_size}, {args.threads} thread(s) per process\n"
        )
        print("| processes | devices | images | seconds (zsir) | images/s | speed-up | wall s | CPU s | identical |")
        print("|---|---|---|---|---|---|---|---|---|")
        for n, devices, images, secs, rate, wall, cpu, same in rows:
            cells = [n, devices, images, f"{secs:.1f}", f"{rate:.3g}", f"{rate / base:.2f}x", f"{wall:.1f}"]
            print("| " + " | ".join(str(c) for c in [*cells, f"{cpu:.1f}", same]) + " |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
