"""Forward time of the ADM prior networks at 256x256, batch 1 (random weights, no download).

Builds diffusers ``UNet2DModel`` s with the converted FFHQ (``ffhq_10m.pt``) and ImageNet
(``256x256_diffusion_uncond.pt``) configs, wraps them as :class:`~zsir.priors.ADMPrior` and times
``prior.denoise`` (one network evaluation, NFE = 1) under ``torch.no_grad``.

Usage::

    nice python benchmarks/priors.py                   # CPU (and CUDA when available)
    python benchmarks/priors.py --device cuda --calls 20 --dtype float16
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from zsir.priors.adm import OPENAI_CONFIGS, ADMPrior
from zsir.priors.diffusion import ddpm_linear_alphas_cumprod, unet_multiple

MODELS = {"ffhq": "ffhq256", "imagenet": "imagenet256"}


def build(config: str, device: torch.device, dtype: torch.dtype) -> ADMPrior:
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(**OPENAI_CONFIGS[config][0])
    prior = ADMPrior(
        unet,
        ddpm_linear_alphas_cumprod(dtype=np.float64),
        multiple=unet_multiple(unet),
        train_size=(256, 256),
        name=config,
    )
    return prior.to(device=device, dtype=dtype)


def time_prior(prior: ADMPrior, device: torch.device, calls: int) -> float:
    """Milliseconds per ``denoise`` call (after one warm-up call)."""
    x = torch.randn(1, 3, 256, 256, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.no_grad():
        prior.denoise(x, 0.5)
        sync()
        start = time.perf_counter()
        for _ in range(calls):
            prior.denoise(x, 0.5)
        sync()
    return 1000 * (time.perf_counter() - start) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", action="append", help="cpu / cuda (default: cpu, plus cuda if available)")
    parser.add_argument("--calls", type=int, default=None, help="timed calls (default: 2 on CPU, 20 on CUDA)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    args = parser.parse_args()
    devices = args.device or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    dtype = getattr(torch, args.dtype)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, dtype {args.dtype}, 256x256, batch 1")
    print(f"{'model':<10} {'device':<8} {'params':>10} {'ms/call':>10}")
    for name in args.models:
        for dev in map(torch.device, devices):
            if dev.type == "cpu" and dtype != torch.float32:
                continue
            prior = build(MODELS[name], dev, dtype)
            params = sum(p.numel() for p in prior.parameters()) / 1e6
            ms = time_prior(prior, dev, args.calls or (2 if dev.type == "cpu" else 20))
            print(f"{name:<10} {dev.type:<8} {params:>9.2f}M {ms:>10.1f}")
            del prior


if __name__ == "__main__":
    main()
