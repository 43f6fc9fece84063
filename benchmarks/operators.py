"""Closed-form pseudo-inverses (SVD / FFT) against the conjugate-gradient fallback at equal accuracy.

For each operator, ``y = A x`` on a 256 x 256 RGB batch of 4 (CPU, float32). The reference is the closed-form
``pinv(y, eta)`` in float64. The CG fallback is ``LinearOperator.from_function(op.A, ...)`` (same ``A``, adjoint by
autograd, CG on the normal equations); its tolerance is tightened until its relative error is <= ``--target``
(default 1e-4), and then both solvers are timed.

Run from the repository root::

    nice python benchmarks/operators.py            # about 1-5 minutes on 2 CPU cores
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
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
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


if __name__ == "__main__":
    main()
