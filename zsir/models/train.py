r"""Bidirectional training of the non-blind NDR-Restore denoiser (docs/priors/denoisers.md), and export for shipping.

One joint step per iteration on clean patches ``x`` and ``y = x + sigma * n`` (unclipped Gaussian noise,
``sigma`` in [0, 1] units)::

    (x_hat, r) = R(y, sigma)                     # restorer + degradation maps r_l (DQ over the NDR)
    y_hat      = G(x; r)                         # NDR-Degrad, modulated by the same maps (no stop-gradient)
    L = w(sigma) * [ L1(x_hat, x) + lambda * L1(y_hat, y) ]

``w(sigma) = sqrt(sigma^2 + sd^2) / sigma`` (``--weighting edm``, the L1 analogue of EDM's ``1 / c_out^2``)
gives every noise level a unit-scale target; ``--weighting uniform`` uses ``w = 1``. ``sigma`` is drawn from
a mixture of a log-uniform law on ``[1e-3, sigma_max]`` (weight ``--p-log``) and a uniform law on
``[0, sigma_max]``, so small noise levels, where the identity must be learnt exactly, are seen often.

AdamW, linear warm-up then cosine decay over the wall-time budget (``--minutes``; the schedule follows the
elapsed fraction of the budget, so a resumed run with a larger budget restarts warm), gradient clipping at 10
(official value), seeded sampling, checkpoints every ``--ckpt-minutes`` to ``<run>/last.pt``, ``--resume``.

Example (the shipped built-in prior)::

    python -m zsir.models.train --run runs/ndr-lite --config lite --minutes 40 \
        --data ../shared/data/cifar10.tar.gz:train ../shared/data/cbsd68 --export zsir/weights/builtin
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor
from tqdm.auto import tqdm

from zsir.models.builtin import load_shipped
from zsir.models.data import PatchSampler, load_images
from zsir.models.ndr import NDRConfig, NDRRestore

__all__ = ["main", "build_parser", "train", "export", "sample_sigma", "training_loss"]


def sample_sigma(n: int, sigma_max: float, p_log: float, generator: torch.Generator, sigma_min: float = 1e-3):
    """``n`` noise stds in [0, 1] units: log-uniform on ``[sigma_min, sigma_max]`` with probability ``p_log``,
    else uniform on ``[0, sigma_max]``; clamped below at ``sigma_min``. Shape ``(n, 1, 1, 1)``."""
    u = torch.rand(n, generator=generator)
    log_s = math.log(sigma_min) + u * (math.log(sigma_max) - math.log(sigma_min))
    uni = torch.rand(n, generator=generator) * sigma_max
    pick = torch.rand(n, generator=generator) < p_log
    return torch.where(pick, log_s.exp(), uni).clamp_min(sigma_min).reshape(n, 1, 1, 1)


def training_loss(
    model: NDRRestore,
    clean: Tensor,
    sigma: Tensor,
    noise: Tensor,
    lambda_: float = 1.0,
    weighting: str = "edm",
) -> tuple[Tensor, dict[str, float]]:
    """Bidirectional loss (module docstring). Returns ``(loss, {"restore": ..., "degrad": ...})``.

    Args:
        clean: ``(B, C, H, W)`` in [0, 1]; sigma: ``(B, 1, 1, 1)`` in [0, 1] units; noise: standard normal.
    """
    noisy = clean + sigma * noise
    restored, maps = model.restore_with_maps(noisy, sigma)
    if weighting == "edm":
        sd = model.config.sigma_data
        w = torch.sqrt(sigma**2 + sd**2) / sigma
    elif weighting == "uniform":
        w = torch.ones_like(sigma)
    else:
        raise ValueError(f"weighting: expected 'edm' or 'uniform', got {weighting!r}")
    restore = (w * (restored - clean).abs()).mean()
    parts = {"restore": float(restore.detach())}
    loss = restore
    if model.degradation_net is not None and lambda_ > 0:
        degrad = (w * (model.degrade(clean, maps) - noisy).abs()).mean()
        loss = loss + lambda_ * degrad
        parts["degrad"] = float(degrad.detach())
    return loss, parts


def _parse_source(spec: str) -> tuple[str, str | None, float]:
    """``path[:split][@weight]`` -> (path, split, weight)."""
    weight = 1.0
    if "@" in spec:
        spec, w = spec.rsplit("@", 1)
        weight = float(w)
    split = None
    if ":" in spec and not Path(spec).exists():
        spec, split = spec.rsplit(":", 1)
    return spec, split, weight


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="zsir train-prior",
        description="Train the non-blind NDR-Restore denoiser (bidirectional NDR-Degrad loss) on CPU or GPU.",
    )
    p.add_argument("--run", required=True, help="run folder for checkpoints and the log (outside the package)")
    p.add_argument("--data", nargs="+", default=[], help="image folders / tar files: PATH[:SPLIT][@WEIGHT]")
    p.add_argument("--config", default="lite", help="NDR preset: lite, lite-plain, official")
    p.add_argument(
        "--ablation",
        choices=["ndr", "plain"],
        default=None,
        help="plain: switch NDR, DQ, DI and Degrad off in the chosen preset",
    )
    p.add_argument("--minutes", type=float, default=30.0, help="wall-time budget of the whole run (incl. resumed)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (in total)")
    p.add_argument("--patch", type=int, default=64)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--max-images", type=int, default=20000, help="per source")
    p.add_argument("--sigma-max", type=float, default=1.0, help="largest training noise std, [0, 1] units")
    p.add_argument("--p-log", type=float, default=0.5, help="probability of the log-uniform sigma law")
    p.add_argument("--lambda", dest="lambda_", type=float, default=1.0, help="weight of the NDR-Degrad loss")
    p.add_argument("--weighting", choices=["edm", "uniform"], default="edm")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--lr-min", type=float, default=1e-5)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--warmup", type=int, default=100, help="linear warm-up steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--ckpt-minutes", type=float, default=3.0)
    p.add_argument("--resume", action="store_true", help="continue from <run>/last.pt")
    p.add_argument(
        "--init",
        default=None,
        help="start from exported weights instead of random ones (fine-tuning): a shipped name such as "
        "'builtin' or an export PREFIX; the architecture is theirs (--config/--ablation are ignored)",
    )
    p.add_argument("--export", default=None, help="write PREFIX.safetensors + PREFIX.json after training")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")
    return p


def _save(path: Path, model, opt, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(
        {"model": model.state_dict(), "optimizer": opt.state_dict(), "config": model.config.to_dict(), **state}, tmp
    )
    tmp.replace(path)


def train(args: argparse.Namespace) -> NDRRestore:
    """Run training as configured by :func:`build_parser` arguments; returns the model."""
    if args.threads:
        torch.set_num_threads(args.threads)
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    ckpt_path = run / "last.pt"
    overrides = {"sigma_max": args.sigma_max}
    if args.ablation == "plain":
        overrides.update(use_ndr=False, use_dq=False, use_di=False, use_degrad=False)
    state = {"step": 0, "elapsed": 0.0, "seed": args.seed, "data": args.data}
    if args.resume:
        if not ckpt_path.is_file():
            raise ValueError(f"--resume: no checkpoint at {ckpt_path}")
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        model = NDRRestore(NDRConfig.from_dict(ckpt["config"]))
        model.load_state_dict(ckpt["model"])
        state.update({k: ckpt[k] for k in ("step", "elapsed", "seed", "data", "gen_state", "init") if k in ckpt})
    elif args.init:
        model = load_shipped(args.init).requires_grad_(True)
        base = model.train_info
        state["init"] = {
            "weights": args.init,
            "steps": int(base.get("steps", 0)),
            "seconds": float(base.get("seconds", 0.0)),
        }
    else:
        model = NDRRestore(args.config, **overrides)
    if not model.config.noise_map:
        raise ValueError("--config: training needs a non-blind (noise_map=True) configuration, e.g. 'lite'")
    model.to(args.device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    if args.resume:
        opt.load_state_dict(ckpt["optimizer"])
    gen = torch.Generator().manual_seed(args.seed)
    if "gen_state" in state:
        gen.set_state(state.pop("gen_state"))
    if not args.data:
        raise ValueError("--data: give at least one image folder or tar file")
    specs = [_parse_source(s) for s in args.data]
    sources = [load_images(p, split=s, max_images=args.max_images) for p, s, _ in specs]
    sampler = PatchSampler(sources, args.patch, args.batch, weights=[w for *_, w in specs], generator=gen)
    budget = args.minutes * 60.0
    log = open(run / "log.txt", "a")
    log.write(
        json.dumps(
            {
                "start": time.strftime("%F %T"),
                "args": vars(args),
                "config": model.config.to_dict(),
                "images": [len(s) for s in sources],
            }
        )
        + "\n"
    )
    t0, last_ckpt = time.time(), time.time()
    elapsed0 = state["elapsed"]
    bar = tqdm(desc="train", unit="step", initial=state["step"], disable=args.no_progress, dynamic_ncols=True)
    ema = None
    while True:
        elapsed = elapsed0 + time.time() - t0
        if elapsed >= budget or (args.max_steps is not None and state["step"] >= args.max_steps):
            break
        frac = min(elapsed / budget, 1.0)
        lr = args.lr_min + 0.5 * (args.lr - args.lr_min) * (1 + math.cos(math.pi * frac))
        lr *= min(1.0, (state["step"] + 1) / max(args.warmup, 1))
        for group in opt.param_groups:
            group["lr"] = lr
        clean = sampler.sample().to(args.device)
        sigma = sample_sigma(clean.shape[0], model.config.sigma_max, args.p_log, gen).to(args.device)
        noise = torch.randn(clean.shape, generator=gen).to(args.device)
        loss, parts = training_loss(model, clean, sigma, noise, args.lambda_, args.weighting)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        state["step"] += 1
        value = float(loss.detach())
        ema = value if ema is None else 0.98 * ema + 0.02 * value
        bar.update(1)
        bar.set_postfix(loss=f"{ema:.4f}", lr=f"{lr:.2e}")
        if state["step"] % 50 == 0:
            log.write(
                json.dumps(
                    {
                        "step": state["step"],
                        "elapsed": round(elapsed, 1),
                        "loss": round(ema, 5),
                        **{k: round(v, 5) for k, v in parts.items()},
                        "lr": lr,
                    }
                )
                + "\n"
            )
            log.flush()
        if time.time() - last_ckpt >= args.ckpt_minutes * 60:
            state["elapsed"] = elapsed0 + time.time() - t0
            _save(ckpt_path, model, opt, {**state, "gen_state": gen.get_state()})
            last_ckpt = time.time()
    bar.close()
    state["elapsed"] = elapsed0 + time.time() - t0
    _save(ckpt_path, model, opt, {**state, "gen_state": gen.get_state()})
    log.write(json.dumps({"end": time.strftime("%F %T"), "step": state["step"], "elapsed": state["elapsed"]}) + "\n")
    log.close()
    model.train_info = {
        "steps": state["step"],
        "seconds": round(state["elapsed"], 1),
        "data": state["data"],
        "seed": state["seed"],
        "patch": args.patch,
        "batch": args.batch,
        "lr": args.lr,
        "lambda": args.lambda_,
        "weighting": args.weighting,
        "p_log": args.p_log,
    }
    if "init" in state:  # fine-tuned: the steps and seconds above come on top of the initial weights' training
        model.train_info["init"] = state["init"]
    if args.export:
        export(model, args.export, model.train_info)
    return model


def export(model: NDRRestore, prefix: str | Path, info: dict | None = None) -> tuple[Path, Path]:
    """Write the inference weights (NDR + restorer, no NDR-Degrad) to ``PREFIX.safetensors`` and the
    architecture + training metadata to ``PREFIX.json``."""
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.restoration_parameters().items()}
    st, js = prefix.with_suffix(".safetensors"), prefix.with_suffix(".json")
    save_file(weights, str(st))
    st.chmod(0o644)
    cfg = model.config.to_dict()
    cfg["use_degrad"] = False
    meta = {
        "arch": "NDRRestore",
        "config": cfg,
        "sigma_max": model.config.sigma_max,
        "units": "[0, 1] images and sigma",
        "multiple": model.config.multiple,
        "params": sum(v.numel() for v in weights.values()),
        "training": info or {},
    }
    js.write_text(json.dumps(meta, indent=2) + "\n")
    return st, js


def load_checkpoint(path: str | Path) -> NDRRestore:
    """An :class:`NDRRestore` from a training checkpoint (``last.pt``), in eval mode."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    model = NDRRestore(NDRConfig.from_dict(ckpt["config"]))
    model.load_state_dict(ckpt["model"])
    model.train_info = {k: ckpt[k] for k in ("step", "elapsed", "data", "seed") if k in ckpt}
    return model.eval()


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``python -m zsir.models.train``, ``zsir train-prior``)."""
    args = build_parser().parse_args(argv)
    train(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
