"""Network calls per second and peak memory per prior, size and precision, in one call (meant for a GPU).

For every prior given (default: ``builtin`` and every named prior whose weights are cached), every size (default
256, 512, 1024; larger than the prior's tile means tiled calls, as users get them) and every precision (float32,
and float16 / bfloat16 by ``torch.autocast``, the ``--dtype`` of the CLI): one warm-up call, then ``--calls``
timed calls of ``prior.denoise`` on a batch of ``--batch`` noisy images. The layout column says whether the
network ran in the channels-last memory format (``Prior.channels_last``: by default on CUDA for convolutional
priors; ``--layouts contiguous channels_last`` measures both). Peak memory is
``torch.cuda.max_memory_allocated`` on CUDA, the bytes torch ops allocated (:func:`zsir.memory.peak_bytes`) on
the CPU. Prints a markdown table.

Run::

    python benchmarks/gpu.py                                  # CUDA if available, else CPU
    python benchmarks/gpu.py --device cpu --sizes 64 --calls 1 --priors builtin   # a quick check of the CPU path
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import torch

from zsir import memory
from zsir.priors import list_priors, load_prior

DTYPES = {"float32": None, "float16": torch.float16, "bfloat16": torch.bfloat16}
LAYOUTS = {"auto": None, "contiguous": False, "channels_last": True}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(prior, size: int, batch: int, calls: int, device: torch.device) -> tuple[float, float]:
    """(network calls per second, peak GB) of ``prior.denoise`` on ``batch`` images of ``size`` x ``size``."""
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(batch, prior.channels, size, size, generator=g).to(device)
    sigma = 0.5 * min(prior.sigma_max, 2.0)
    with torch.no_grad():
        prior.denoise(x, sigma)  # warm-up: kernels, caches
        sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        with memory.peak_bytes() as m:
            t0 = time.perf_counter()
            for _ in range(calls):
                prior.denoise(x, sigma)
            sync(device)
            seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else m.peak
    return calls / seconds, peak / 1e9


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--priors", nargs="*", default=None, help="names (default: builtin + every cached named prior)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    ap.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    ap.add_argument("--layouts", nargs="+", default=["auto"], choices=list(LAYOUTS), help="memory formats")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--calls", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    names = args.priors or ["builtin"] + [r["name"] for r in list_priors() if r["cached"] and r["name"] != "builtin"]
    print("command: python benchmarks/gpu.py " + " ".join(sys.argv[1:] if argv is None else argv))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name}, torch {torch.__version__}, batch {args.batch}, {args.calls} timed calls")
    print("| prior | size | dtype | layout | tile | NFE/s | peak GB |")
    print("|---|---|---|---|---|---|---|")
    for prior_name in names:
        prior = load_prior(prior_name, device=device)
        for size in args.sizes:
            for dtype, layout in [(d, lay) for d in args.dtypes for lay in args.layouts]:
                prior.autocast_dtype, prior.channels_last = DTYPES[dtype], LAYOUTS[layout]
                used = "channels_last" if prior.uses_channels_last(device) else "contiguous"
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        rate, peak = measure(prior, size, args.batch, args.calls, device)
                    row = f"{rate:.2f} | {peak:.2f}"
                except (RuntimeError, torch.cuda.OutOfMemoryError) as err:  # e.g. no float16 kernel on this device
                    row = f"failed: {str(err).splitlines()[0][:60]} | -"
                print(f"| {prior_name} | {size} | {dtype} | {used} | {prior.tiling()[0]} | {row} |", flush=True)
        del prior
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
