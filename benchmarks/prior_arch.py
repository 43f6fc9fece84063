"""Architecture comparison for the built-in prior: validation PSNR against the CPU time of the training thread.

Every candidate is trained from scratch with the loss and sigma law of ``zsir train-prior`` (EDM-weighted L1,
sigma ~ 0.5 log-uniform[1e-3, 1] + 0.5 uniform[0, 1] in [0, 1] units, unclipped noise), AdamW, 100 warm-up
steps then a cosine decay over the CPU-time budget, patches from cbsd432 + cbsd68 minus the 10 held-out
validation images (:data:`zsir.models.data.VALIDATION_CBSD68`). One torch thread; the clock is
``time.thread_time()`` of the training steps only (evaluation excluded), wall time is logged beside it.
At each checkpoint (in CPU minutes) the model denoises 256x256 centre crops of the validation images at
sigma 15, 25, 50 /255 (seeded, unclipped noise, output clamped), the mean PSNR is written as one JSON line and
the weights are exported beside ``--out`` (``OUT.safetensors`` + ``OUT.json``, for ``zsir train-prior --init``).

Examples (the BENCHMARKS.md table; run the candidates in parallel under ``nice``)::

    nice -n 10 python benchmarks/prior_arch.py --arch unet --cpu-minutes 8 --out runs/arch/unet.jsonl
    python benchmarks/prior_arch.py --eval builtin runs/unet/export    # validation PSNR of exported weights
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from zsir.io import read_image
from zsir.models.builtin import build_model, load_shipped
from zsir.models.data import VALIDATION_CBSD68, PatchSampler, load_images
from zsir.models.train import export, sample_sigma, training_loss

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def validation_images(root: Path, crop: int = 256) -> list[torch.Tensor]:
    """256x256 centre crops of the held-out CBSD68 images, ``(1, 3, 256, 256)`` in [0, 1]."""
    out = []
    for name in VALIDATION_CBSD68:
        x = read_image(root / "cbsd68" / name, channels=3)
        H, W = x.shape[-2:]
        y0, x0 = (H - crop) // 2, (W - crop) // 2
        out.append(x[..., y0 : y0 + crop, x0 : x0 + crop])
    return out


@torch.no_grad()
def validate(model, images: list[torch.Tensor], sigmas=(15, 25, 50)) -> dict[str, float]:
    """Mean PSNR (dB) per sigma (/255) over ``images``; noise seeded per (image, sigma)."""
    model.eval()
    res = {}
    for s255 in sigmas:
        acc = 0.0
        for i, x in enumerate(images):
            g = torch.Generator().manual_seed(1000 * i + s255)
            y = x + (s255 / 255) * torch.randn(x.shape, generator=g)
            mse = ((model.restore(y, sigma=s255 / 255) - x) ** 2).mean()
            acc += float(-10 * torch.log10(mse))
        res[str(s255)] = round(acc / len(images), 3)
    model.train()
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", help="ndr, unshuffle or unet (training mode)")
    p.add_argument("--eval", nargs="+", metavar="WEIGHTS", help="only evaluate shipped names / export prefixes")
    p.add_argument("--config", default=None, help="preset of the architecture (default: its default preset)")
    p.add_argument("--cpu-minutes", type=float, default=8.0)
    p.add_argument("--evals", type=float, nargs="+", default=[1, 2, 4, 6, 8], help="checkpoints in CPU minutes")
    p.add_argument("--patch", type=int, default=64)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-root", default=str(DATA))
    p.add_argument("--out", help="JSON lines file (training mode)")
    args = p.parse_args()
    torch.set_num_threads(1)
    root = Path(args.data_root)
    if args.eval:
        val = validation_images(root)
        for name in args.eval:
            print(json.dumps({"weights": name, "psnr": validate(load_shipped(name), val)}), flush=True)
        return
    if not (args.arch and args.out):
        p.error("--arch and --out are needed to train (or give --eval WEIGHTS)")
    gen = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    model = build_model(args.arch, args.config)
    sources = [load_images(root / d, exclude=VALIDATION_CBSD68) for d in ("cbsd432", "cbsd68")]
    sampler = PatchSampler(sources, args.patch, args.batch, weights=[len(s) for s in sources], generator=gen)
    val = validation_images(root)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    params = sum(v.numel() for v in model.restoration_parameters().values())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    log = out.open("w")
    head = {"arch": args.arch, "config": model.config.to_dict(), "params": params, "args": vars(args)}
    log.write(json.dumps(head) + "\n")
    budget, evals = args.cpu_minutes * 60, sorted(args.evals)
    cpu, step, wall0 = 0.0, 0, time.time()
    model.train()
    while evals:
        t = time.thread_time()
        frac = min(cpu / budget, 1.0)
        lr = 1e-5 + 0.5 * (args.lr - 1e-5) * (1 + math.cos(math.pi * frac)) * min(1.0, (step + 1) / 100)
        for group in opt.param_groups:
            group["lr"] = lr
        clean = sampler.sample()
        sigma = sample_sigma(clean.shape[0], 1.0, 0.5, gen)
        noise = torch.randn(clean.shape, generator=gen)
        loss, _ = training_loss(model, clean, sigma, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        step += 1
        cpu += time.thread_time() - t
        if cpu >= evals[0] * 60:
            evals.pop(0)
            row = {"step": step, "cpu_min": round(cpu / 60, 2), "wall_min": round((time.time() - wall0) / 60, 2)}
            row["psnr"] = validate(model, val)
            log.write(json.dumps(row) + "\n")
            log.flush()
            export(model, out.with_suffix(""), {"steps": step, "cpu_seconds": round(cpu, 1), **head["args"]})
            print(args.arch, row, flush=True)
    log.close()


if __name__ == "__main__":
    main()
