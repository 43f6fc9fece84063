"""Closed-form pseudo-inverses (SVD / FFT) against the conjugate-gradient fallback at equal accuracy.

For each operator, ``y = A x`` on a 256 x 256 RGB batch of 4 (CPU, float32). The reference is the closed-form
``pinv(y, eta)`` in float64. The CG fallback is ``LinearOperator.from_function(op.A, ...)`` (same ``A``, adjoint by
autograd, CG on the normal equations); its tolerance is tightened until its relative error is <= ``--target``
(default 1e-4), and then both solvers are timed.

Run from the repository root::

    nice python benchmarks/operators.py            # about 1-5 minutes on 2 CPU cores

``--photo`` measures instead every operator of issue 14 on one 4000x3000 RGB photo (``--photo-size H W``): wall time
and peak bytes allocated (:func:`zsir.memory.peak_bytes`) of the first ``A`` (which builds the caches), ``At``,
``pinv`` and ``Vt``, and the bytes the operator keeps afterwards::

    nice python benchmarks/operators.py --photo --threads 1 [--only CircularBlur Inpainting]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from zsir.operators import (
    BicubicSR,
    CircularBlur,
    LinearOperator,
    SeparableBlur,
    gaussian_kernel,
    gaussian_kernel_2d,
)


def timed(fn, repeats: int) -> tuple[float, torch.Tensor]:
    """Median wall time in seconds over ``repeats`` calls, and the last result."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b).norm() / b.norm())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--target", type=float, default=1e-4, help="relative error the CG solution must reach")
    parser.add_argument("--repeats", type=int, default=5, help="timing repeats of the closed form")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--photo", action="store_true", help="peak memory and time at photo size instead")
    parser.add_argument("--photo-size", type=int, nargs=2, default=[3000, 4000], metavar=("H", "W"))
    parser.add_argument("--only", nargs="*", default=None, help="operator names for --photo (default: all)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.photo:
        return photo(args)
    print("command:", "nice python benchmarks/operators.py " + " ".join(sys.argv[1:] if argv is None else argv))
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, CPU, float32, {threads} threads, x: {args.batch}x3x{args.size}x{args.size}")

    g = torch.Generator().manual_seed(0)
    shape = (args.batch, 3, args.size, args.size)
    x = torch.rand(shape, generator=g)
    cases = [
        ("BicubicSR(4)", BicubicSR(4), 0.0),
        ("SeparableBlur(gaussian_kernel(9, 2.0))", SeparableBlur(gaussian_kernel(9, 2.0)), 1e-3),
        ("CircularBlur(gaussian_kernel_2d(61, 3.0))", CircularBlur(gaussian_kernel_2d(61, 3.0)), 1e-3),
    ]
    rows = []
    for name, op, eta in cases:
        y = op.A(x)
        ref = op.pinv(y.double(), eta)
        t_closed, p_closed = timed(lambda op=op, y=y, eta=eta: op.pinv(y, eta), args.repeats)

        counter = {"calls": 0}

        def counted(v, op=op, counter=counter):
            counter["calls"] += 1
            return op.A(v)

        generic = LinearOperator.from_function(counted, shape)
        generic.cg_max_iter = 20000
        best = None  # (error, seconds, tol, calls); tighten tol until the target or a float32 plateau
        for tol in [10 ** (-k / 2) for k in range(4, 19)]:
            generic.cg_tol = tol
            counter["calls"] = 0
            t_cg, p_cg = timed(lambda generic=generic, y=y, eta=eta: generic.pinv(y, eta), 1)
            err = rel(p_cg, ref)
            if best is not None and err > 0.8 * best[0]:
                break  # no further progress: float32 round-off floor of CG
            best = (err, t_cg, tol, counter["calls"])
            if err <= args.target:
                break
        err_cg, t_cg, tol, calls = best
        rows.append((name, eta, t_closed, rel(p_closed, ref), t_cg, err_cg, tol, calls))
        print(f"  done {name}: closed {t_closed * 1e3:.1f} ms, CG {t_cg:.2f} s", flush=True)

    print()
    head = f"{'operator':44s} {'eta':>6s} {'closed ms':>10s} {'closed err':>10s} {'CG ms':>10s} {'CG err':>9s}"
    print(head + f" {'CG tol':>8s} {'A calls':>8s} {'speed-up':>9s}")
    for name, eta, tc, ec, tg, eg, tol, n in rows:
        cols = f"{eta:6.0e} {tc * 1e3:10.1f} {ec:10.1e} {tg * 1e3:10.1f} {eg:9.1e} {tol:8.1e} {n:8d}"
        print(f"{name:44s} {cols} {tg / tc:8.0f}x")
    print("errors: relative to the closed-form pinv in float64; A calls: forward calls of the CG fallback (2 per")
    print("iteration: A and its autograd adjoint) at the accepted tolerance (the tightest that still improved the")
    print(f"error, stopping at {args.target:g}; float32 CG stalls near 1e-4 for ill-conditioned blurs).")


def photo(args) -> None:
    """Time and peak memory of each operator on one photo-size RGB image (module docstring)."""
    from zsir import memory
    from zsir.operators import Colorization, Inpainting, box_mask

    H, W = args.photo_size
    x = torch.rand(1, 3, H, W, generator=torch.Generator().manual_seed(0))
    ops = {
        "Inpainting": lambda: Inpainting(box_mask((3, H, W), (H // 4, W // 4, H // 2, W // 2))),
        "Colorization": Colorization,
        "CircularBlur": lambda: CircularBlur(gaussian_kernel_2d(61, 3.0)),
        "SeparableBlur": lambda: SeparableBlur(gaussian_kernel(9, 2.0)),
        "BicubicSR(2)": lambda: BicubicSR(2),
    }
    with memory.peak_bytes():  # one-time set-up of the dispatch mode, not part of any operator's time
        Inpainting(torch.ones(1, 8, 8)).A(torch.ones(1, 1, 8, 8))
    print(f"x: 1x3x{H}x{W} float32 ({x.numel() * 4 / 1e6:.0f} MB), {torch.get_num_threads()} threads")
    print("| operator | A s | A peak MB | At s | At peak MB | pinv s | pinv peak MB | Vt s | Vt peak MB | kept MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, make in ops.items():
        if args.only and name not in args.only:
            continue
        op = make()
        y = None
        cells = []
        for what in ("A", "At", "pinv", "Vt"):
            fn = {
                "A": lambda op=op: op.A(x),
                "At": lambda op=op, y=y: op.At(y),
                "pinv": lambda op=op, y=y: op.pinv(y, 1e-3),
                "Vt": lambda op=op: op.Vt(x) if hasattr(op, "Vt") else None,
            }[what]
            with memory.peak_bytes() as m:
                t0 = time.perf_counter()
                out = fn()
                dt = time.perf_counter() - t0
            y = out if what == "A" else y
            cells += [f"{dt:.2f}", f"{m.peak / 1e6:.0f}"]
        print(f"| {name} | " + " | ".join(cells) + f" | {memory.operator_bytes(op) / 1e6:.0f} |", flush=True)


if __name__ == "__main__":
    main()
