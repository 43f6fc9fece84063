r"""Training of the built-in prior (any architecture of :data:`zsir.models.builtin.ARCHITECTURES`) and export.

One step per iteration on clean patches ``x`` and ``y = x + sigma * n`` (unclipped Gaussian noise, ``sigma`` in
[0, 1] units)::

    L = w(sigma) * L1(D(y, sigma), x)     [ + lambda * w(sigma) * L1(G(x; r), y)  for NDR with NDR-Degrad ]

``w(sigma) = sqrt(sigma^2 + sd^2) / sigma`` (``--weighting edm``, the L1 analogue of EDM's ``1 / c_out^2``)
gives every noise level a unit-scale target; ``--weighting uniform`` uses ``w = 1``. ``sigma`` is drawn from
a mixture of a log-uniform law on ``[1e-3, sigma_max]`` (weight ``--p-log``) and a uniform law on
``[0, sigma_max]``, so small noise levels, where the identity must be learnt exactly, are seen often. The
second term is the bidirectional NDR-Degrad loss of NDR-Restore (``--arch ndr --config lite`` only).

Reproducible by construction: batch ``i`` (patches, ``sigma`` and noise) is drawn from a generator seeded with
``(seed, i)`` (:class:`StepBatches`), the learning rate is a function of the step (:func:`learning_rate`:
linear warm-up over ``--warmup`` steps, then a cosine decay to ``--lr-min`` at ``--steps``), and the checkpoint
``<run>/last.pt`` holds the weights, the optimizer and the step. A run stopped (``--max-steps``, the wall-clock
guard ``--minutes``, Ctrl-C after a checkpoint) and continued with ``--resume`` gives the same weights as an
uninterrupted run (bitwise on the CPU). ``--init builtin`` starts from shipped weights instead (fine-tuning).

On a GPU: ``--device cuda --amp bf16 --channels-last --workers 8`` (mixed precision, NHWC convolutions, batches
built by worker processes into pinned memory); ``benchmarks/train_gpu.sh`` is the recipe.

Example (CPU, one thread; the architecture of the shipped prior)::

    zsir train-prior --run runs/mine --arch ndr --config lite-plain --steps 20000 --threads 1 \
        --data ../shared/data/cbsd432 ../shared/data/cbsd68 --export runs/mine/export
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import Tensor, nn
from tqdm.auto import tqdm

from zsir.models.builtin import ARCHITECTURES, build_model, load_shipped, model_from_meta
from zsir.models.data import VALIDATION_CBSD68, PatchSampler, load_images

__all__ = [
    "main",
    "build_parser",
    "train",
    "export",
    "sample_sigma",
    "training_loss",
    "learning_rate",
    "StepBatches",
    "load_checkpoint",
]


def sample_sigma(n: int, sigma_max: float, p_log: float, generator: torch.Generator, sigma_min: float = 1e-3):
    """``n`` noise stds in [0, 1] units: log-uniform on ``[sigma_min, sigma_max]`` with probability ``p_log``,
    else uniform on ``[0, sigma_max]``; clamped below at ``sigma_min``. Shape ``(n, 1, 1, 1)``."""
    u = torch.rand(n, generator=generator)
    log_s = math.log(sigma_min) + u * (math.log(sigma_max) - math.log(sigma_min))
    uni = torch.rand(n, generator=generator) * sigma_max
    pick = torch.rand(n, generator=generator) < p_log
    return torch.where(pick, log_s.exp(), uni).clamp_min(sigma_min).reshape(n, 1, 1, 1)


def learning_rate(step: int, steps: int, lr: float, lr_min: float, warmup: int) -> float:
    """Learning rate of step ``step`` (0-based) of a ``steps``-step run: ``lr * (step + 1) / warmup`` during the
    warm-up, then ``lr_min + (lr - lr_min) (1 + cos(pi t)) / 2`` with ``t = (step - warmup) / (steps - warmup)``
    clamped to [0, 1]."""
    if step < warmup:
        return lr * (step + 1) / warmup
    t = min(max((step - warmup) / max(steps - warmup, 1), 0.0), 1.0)
    return lr_min + 0.5 * (lr - lr_min) * (1 + math.cos(math.pi * t))


def training_loss(
    model: nn.Module,
    clean: Tensor,
    sigma: Tensor,
    noise: Tensor,
    lambda_: float = 1.0,
    weighting: str = "edm",
) -> tuple[Tensor, dict[str, float]]:
    """The loss of the module docstring. Returns ``(loss, {"restore": ..., ["degrad": ...]})``, the parts as
    detached scalar tensors (no device synchronisation per step).

    Args:
        model: a denoiser with ``restore_with_maps`` (every architecture of ``ARCHITECTURES``).
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
    restore = (w * (restored.float() - clean).abs()).mean()
    parts = {"restore": restore.detach()}
    loss = restore
    if model.degradation_net is not None and lambda_ > 0:
        degrad = (w * (model.degrade(clean, maps).float() - noisy).abs()).mean()
        loss = loss + lambda_ * degrad
        parts["degrad"] = degrad.detach()
    return loss, parts


class StepBatches(torch.utils.data.Dataset):
    """Batch ``i`` of a run: ``(clean, sigma, noise)`` drawn from a generator seeded with ``(seed, i)`` (mixed
    by :class:`numpy.random.SeedSequence`), so that
    any step can be re-created alone (resume) and batches can be built by DataLoader workers in any order.

    Args:
        sampler: the patch sampler (its own generator is not used).
        seed: run seed.
        sigma_max, p_log: the sigma law (:func:`sample_sigma`), [0, 1] units.
    """

    def __init__(self, sampler: PatchSampler, seed: int, sigma_max: float, p_log: float) -> None:
        self.sampler, self.seed, self.sigma_max, self.p_log = sampler, int(seed), float(sigma_max), float(p_log)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, Tensor]:
        # torch's CPU generator keeps 32 bits of the seed: mix (seed, index) into them with a SeedSequence
        g = torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, int(index)]).generate_state(1)[0]))
        clean = self.sampler.sample(g)
        sigma = sample_sigma(clean.shape[0], self.sigma_max, self.p_log, g)
        return clean, sigma, torch.randn(clean.shape, generator=g)


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
        description="Train the built-in prior (a non-blind Gaussian denoiser) on the CPU or a GPU.",
    )
    p.add_argument("--run", required=True, help="run folder for checkpoints and the log (outside the package)")
    p.add_argument("--data", nargs="+", default=[], help="image folders / tar files: PATH[:SPLIT][@WEIGHT]")
    p.add_argument("--arch", choices=sorted(ARCHITECTURES), default="ndr", help="network architecture")
    p.add_argument(
        "--config",
        default=None,
        help="preset of the architecture (ndr: lite-plain, lite, tiny, official; unshuffle: small, ffdnet, tiny; "
        "unet: small, wide, tiny; default: the first)",
    )
    p.add_argument(
        "--ablation",
        choices=["ndr", "plain"],
        default=None,
        help="ndr only; plain: switch NDR, DQ, DI and Degrad off in the chosen preset",
    )
    p.add_argument("--steps", type=int, default=20000, help="length of the learning-rate schedule (total steps)")
    p.add_argument("--max-steps", type=int, default=None, help="stop at this step (the schedule keeps --steps)")
    p.add_argument("--minutes", type=float, default=None, help="wall-clock guard: checkpoint and stop after this")
    p.add_argument("--patch", type=int, default=64)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--max-images", type=int, default=20000, help="per source")
    p.add_argument(
        "--exclude",
        nargs="*",
        default=list(VALIDATION_CBSD68),
        help="file names never trained on (default: the 10 CBSD68 validation images)",
    )
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
        "'builtin' or an export PREFIX; the architecture is theirs (--arch/--config/--ablation are ignored)",
    )
    p.add_argument("--export", default=None, help="write PREFIX.safetensors + PREFIX.json after training")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--amp", choices=["off", "bf16", "fp16"], default="off", help="autocast mixed precision")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format (faster convolutions on GPU)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes building the batches")
    p.add_argument("--no-progress", action="store_true")
    return p


def _save(path: Path, model, opt, scaler, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scaler": scaler.state_dict(),
            "arch": type(model).__name__,
            "config": model.config.to_dict(),
            **state,
        },
        tmp,
    )
    tmp.replace(path)


def _initial_model(args: argparse.Namespace, state: dict):
    """The model to train and, on ``--resume``, the checkpoint it came from."""
    ckpt_path = Path(args.run) / "last.pt"
    if args.resume:
        if not ckpt_path.is_file():
            raise ValueError(f"--resume: no checkpoint at {ckpt_path}")
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        model = model_from_meta({"arch": ckpt.get("arch", "NDRRestore"), "config": ckpt["config"]}, str(ckpt_path))
        model.load_state_dict(ckpt["model"])
        state.update({k: ckpt[k] for k in ("step", "elapsed", "cpu", "seed", "data", "init") if k in ckpt})
        return model, ckpt
    if args.init:
        model = load_shipped(args.init).requires_grad_(True)
        base = model.train_info
        state["init"] = {
            "weights": args.init,
            "arch": type(model).__name__,
            "steps": int(base.get("steps", 0)),
            "seconds": float(base.get("seconds", 0.0)),
        }
        return model, None
    overrides = {"sigma_max": args.sigma_max}
    if args.ablation and args.arch != "ndr":
        raise ValueError(f"--ablation: only for --arch ndr, got --arch {args.arch}")
    if args.ablation == "plain":
        overrides.update(use_ndr=False, use_dq=False, use_di=False, use_degrad=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)  # the initial weights follow the seed
        model = build_model(args.arch, args.config, **overrides)
    if not getattr(model.config, "noise_map", True):
        raise ValueError("--config: training needs a non-blind (noise_map=True) configuration, e.g. 'lite'")
    return model, None


def train(args: argparse.Namespace) -> nn.Module:
    """Run training as configured by :func:`build_parser` arguments; returns the model."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.data:
        raise ValueError("--data: give at least one image folder or tar file")
    if args.steps < 1 or args.warmup < 0:
        raise ValueError(f"--steps, --warmup: expected >= 1 and >= 0, got {args.steps}, {args.warmup}")
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed patch size: let cuDNN pick the fastest kernels once
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    ckpt_path = run / "last.pt"
    state = {"step": 0, "elapsed": 0.0, "cpu": 0.0, "seed": args.seed, "data": args.data}
    model, ckpt = _initial_model(args, state)
    model.to(device).train()
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp == "fp16")
    if ckpt is not None:
        opt.load_state_dict(ckpt["optimizer"])
        if "scaler" in ckpt:
            scaler.load_state_dict(ckpt["scaler"])
    specs = [_parse_source(s) for s in args.data]
    sources = [load_images(p, split=s, max_images=args.max_images, exclude=args.exclude) for p, s, _ in specs]
    sampler = PatchSampler(sources, args.patch, args.batch, weights=[w for *_, w in specs])
    batches = StepBatches(sampler, state["seed"], model.config.sigma_max, args.p_log)
    stop = min(args.steps, args.max_steps) if args.max_steps is not None else args.steps
    loader = torch.utils.data.DataLoader(
        batches,
        batch_size=None,
        sampler=range(state["step"], max(stop, state["step"])),
        num_workers=args.workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if args.workers else None,
    )
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    log = open(run / "log.txt", "a")
    start = {"start": time.strftime("%F %T"), "args": vars(args), "config": model.config.to_dict()}
    log.write(json.dumps({**start, "arch": type(model).__name__, "images": [len(s) for s in sources]}) + "\n")
    t0, c0, last_ckpt = time.time(), time.process_time(), time.time()
    elapsed0, cpu0 = state["elapsed"], state["cpu"]
    bar = tqdm(desc="train", unit="step", initial=state["step"], total=stop, disable=args.no_progress)

    def checkpoint() -> None:
        state["elapsed"] = elapsed0 + time.time() - t0
        state["cpu"] = cpu0 + time.process_time() - c0
        _save(ckpt_path, model, opt, scaler, state)

    for clean, sigma, noise in loader:
        if args.minutes is not None and time.time() - t0 >= args.minutes * 60:
            break
        lr = learning_rate(state["step"], args.steps, args.lr, args.lr_min, args.warmup)
        for group in opt.param_groups:
            group["lr"] = lr
        clean, sigma, noise = (t.to(device, non_blocking=True) for t in (clean, sigma, noise))
        clean, noise = clean.contiguous(memory_format=fmt), noise.contiguous(memory_format=fmt)
        autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()
        with autocast:
            loss, parts = training_loss(model, clean, sigma, noise, args.lambda_, args.weighting)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        scaler.step(opt)
        scaler.update()
        state["step"] += 1
        bar.update(1)
        if state["step"] % 50 == 0:  # reading the loss synchronises the device: only now and then
            values = {k: round(float(v), 5) for k, v in parts.items()}
            bar.set_postfix(loss=f"{values['restore']:.4f}", lr=f"{lr:.2e}")
            row = {"step": state["step"], "elapsed": round(elapsed0 + time.time() - t0, 1), **values, "lr": lr}
            log.write(json.dumps(row) + "\n")
            log.flush()
        if time.time() - last_ckpt >= args.ckpt_minutes * 60:
            checkpoint()
            last_ckpt = time.time()
    bar.close()
    checkpoint()
    log.write(json.dumps({"end": time.strftime("%F %T"), "step": state["step"], "elapsed": state["elapsed"]}) + "\n")
    log.close()
    model.train_info = {
        "steps": state["step"],
        "schedule_steps": args.steps,
        "seconds": round(state["elapsed"], 1),
        "cpu_seconds": round(state["cpu"], 1),
        "device": str(device),
        "data": state["data"],
        "exclude": list(args.exclude),
        "seed": state["seed"],
        "patch": args.patch,
        "batch": args.batch,
        "lr": args.lr,
        "lr_min": args.lr_min,
        "warmup": args.warmup,
        "amp": args.amp,
        "lambda": args.lambda_,
        "weighting": args.weighting,
        "p_log": args.p_log,
    }
    if "init" in state:  # fine-tuned: the steps and seconds above come on top of the initial weights' training
        model.train_info["init"] = state["init"]
    model.to(memory_format=torch.contiguous_format)
    if args.export:
        export(model, args.export, model.train_info)
    return model


def export(model: nn.Module, prefix: str | Path, info: dict | None = None) -> tuple[Path, Path]:
    """Write the inference weights (for NDR without NDR-Degrad) to ``PREFIX.safetensors`` and the architecture
    (``arch``, the class name, and ``config``) + training metadata to ``PREFIX.json``."""
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.restoration_parameters().items()}
    st, js = prefix.with_suffix(".safetensors"), prefix.with_suffix(".json")
    save_file(weights, str(st))
    st.chmod(0o644)
    cfg = model.config.to_dict()
    if "use_degrad" in cfg:
        cfg["use_degrad"] = False
    meta = {
        "arch": type(model).__name__,
        "config": cfg,
        "sigma_max": model.config.sigma_max,
        "units": "[0, 1] images and sigma",
        "multiple": model.config.multiple,
        "params": sum(v.numel() for v in weights.values()),
        "training": info or {},
    }
    js.write_text(json.dumps(meta, indent=2) + "\n")
    return st, js


def load_checkpoint(path: str | Path) -> nn.Module:
    """The denoiser of a training checkpoint (``last.pt``, any architecture), in eval mode."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    model = model_from_meta({"arch": ckpt.get("arch", "NDRRestore"), "config": ckpt["config"]}, str(path))
    model.load_state_dict(ckpt["model"])
    model.train_info = {k: ckpt[k] for k in ("step", "elapsed", "cpu", "data", "seed") if k in ckpt}
    return model.eval()


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``python -m zsir.models.train``, ``zsir train-prior``)."""
    args = build_parser().parse_args(argv)
    train(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
