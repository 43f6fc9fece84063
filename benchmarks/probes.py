"""Re-run the new-user fault and bad-input probes of zsir's reliability review; print one line per probe.

Each probe does what a user did (a bad flag, a damaged checkpoint, a kill during a batch, ...) and states what a
good outcome is: a clear error naming the cause before any work, or a correct result with nothing lost. The kill
probe SIGKILLs ``zsir restore`` at seeded random moments during a batch and checks that every output set is
complete or absent, then that ``--resume`` finishes it byte-identical to an uninterrupted run.

    python benchmarks/probes.py                      # all probes, up to 12 kills on 12 images of 128x128
    python benchmarks/probes.py --kills 3 --size 64  # quicker
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import zsir
from zsir.cli import main, outputs

FAST = ["--sampler", "pnp", "--steps", "2", "--no-progress"]


def cli(*argv: str) -> tuple[int, str, str]:
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        rc = main(list(argv))
    return rc, out.getvalue(), err.getvalue()


def image(path: Path, size: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    base = rng.random((size // 8 + 1, size // 8 + 1, 3))
    img = Image.fromarray((base * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
    img.save(path)
    return path


def raises(fn: Callable[[], object], *needles: str, absent: str = "") -> tuple[bool, str]:
    try:
        fn()
    except Exception as err:  # the probe wants a clear exception
        msg = f"{type(err).__name__}: {err}"
        return all(n in msg for n in needles) and (not absent or absent not in msg), msg
    return False, "no error"


def probes(tmp: Path, size: int) -> list[tuple[str, bool, str]]:
    src = image(tmp / "photo.png", 32)
    out = tmp / "out"
    base = ["restore", str(src), "-o", str(out), "--task", "denoise", "--simulate", *FAST]
    results = []

    def check(name: str, ok: bool, detail: str) -> None:
        results.append((name, ok, detail.strip().splitlines()[-1][:150] if detail.strip() else ""))

    rc, _, err = cli(*base)
    before = (out / "photo.png").read_bytes()
    rc, _, err = cli(*[a if a != "pnp" else "ddrm" for a in base], "--resume")
    check("--resume with another --sampler", rc == 2 and "sampler 'pnp' (now 'ddrm')" in err, err)
    check("  ... keeps the finished set", (out / "photo.png").read_bytes() == before, "unchanged")
    rc, _, err = cli(*base, "--resume", "--overwrite")
    check("--resume with --overwrite", rc == 2 and "contradict" in err, err)

    x = zsir.io.read_image(src)
    op = zsir.operators.BicubicSR(2)
    ok, msg = raises(lambda: zsir.solve(op.A(x) * 255, op, sampler="pnp", progress=False), "0-255")
    check("zsir.solve(y * 255, ...)", ok, msg)
    ok, msg = raises(lambda: zsir.solve(op.A(x), op, generator="abc", progress=False), "generator:")
    check('zsir.solve(..., generator="abc")', ok, msg)

    from safetensors.torch import save_file

    state = {"w": torch.randn(512, 64)}
    save_file(state, tmp / "full.safetensors")
    torch.save(state, tmp / "full.pt")
    for name in ("full.safetensors", "full.pt"):
        data = (tmp / name).read_bytes()
        (tmp / name.replace("full", "trunc")).write_bytes(data[: len(data) // 2])
    (tmp / "garbage.pt").write_bytes(os.urandom(4096))
    for name in ("trunc.safetensors", "trunc.pt", "garbage.pt"):
        rc, _, err = cli(*base, "--overwrite", "--prior", str(tmp / name))
        good = rc == 1 and ("truncated" in err or "not a checkpoint" in err) and "config=" not in err
        check(f"--prior {name}", good, err)
    ok, msg = raises(
        lambda: zsir.load_prior(tmp / "trunc.pt", config="ffhq256"), "truncated", absent="weights_only=False"
    )
    check('load_prior("trunc.pt", config=...)', ok, msg)
    ok, msg = raises(lambda: zsir.load_prior(tmp / "missing.pt"), "no such file")
    check('load_prior("missing.pt")', ok, msg)

    rc, _, err = cli(*base, "--overwrite", "--device", "gpu")
    check("--device gpu", rc == 2 and "--device" in err, err)
    if not torch.cuda.is_available():
        rc, _, err = cli(*base, "--overwrite", "--device", "cuda")
        check("--device cuda without CUDA", rc == 2 and "CUDA is not available" in err, err)
    blocker = tmp / "a-file"
    blocker.write_text("x")
    rc, _, err = cli(*[a if a != str(out) else str(blocker / "out") for a in base])
    check("-o inside a file (unwritable)", rc == 2 and "cannot write" in err, err)
    tiny = image(tmp / "tiny.png", 1)
    rc, _, err = cli("restore", str(tiny), "-o", str(tmp / "t"), "--task", "sr4", "--simulate", *FAST)
    check("1x1 image, sr4", rc == 1 and "at least 4x4" in err and "0x0" not in err, err)
    rc, _, err = cli(*base, "--sigma-y", "7")
    check("--sigma-y 7", rc == 2 and err.count("--sigma-y") == 1, err)
    (tmp / "mask.png").write_text("not an image\n")
    rc, _, err = cli("restore", str(src), "-o", str(tmp / "m"), "--task", f"inpaint-mask:{tmp / 'mask.png'}", *FAST)
    check("text file as the mask", rc == 2 and "mask file" in err, err)
    rc, _, err = cli(*base, "--task", "sr3")
    check("--task sr3", rc == 2 and "sr8" not in err.split("factors")[0] and "2, 4 and 8" in err, err)
    rc, help_text, _ = cli("restore", "--help")
    whole = "Every restoration goes through" in help_text and "``" not in help_text
    check("zsir restore --help (whole, plain)", rc == 0 and whole, "complete, no reST markup")
    check("  ... every option shows its default", help_text.count("(default") >= 18, f"{help_text.count('(default')}")
    grid = Image.open(out / "photo_grid.png")
    check("grid labels readable", grid.size[1] >= 160 + 12, f"grid {grid.size}, label font >= 12 px")
    rc, listing, _ = cli("priors")
    check("zsir priors licence column", "licence" in listing.splitlines()[0], listing.splitlines()[0])
    os.environ["ZSIR_CACHE"] = str(tmp / "cache")
    (tmp / "cache" / "downloads").mkdir(parents=True)
    (tmp / "cache" / "downloads" / "256x256_diffusion_uncond.pt").write_bytes(b"\0" * 1000)
    rc, listing, _ = cli("priors")
    line = next(x for x in listing.splitlines() if x.startswith("imagenet "))
    check("zsir priors, corrupt cached file", "CORRUPT" in line, line)
    return results


def _reproducible(record: dict) -> dict:
    """A set's JSON without what depends on the moment of the run: timings and the memory free at the time (the
    tiling plan's budget when no ``--max-memory`` was given)."""
    out = {k: v for k, v in record.items() if "seconds" not in k}
    if isinstance(out.get("tiling"), dict) and out["tiling"].get("budget_source") != "max_memory":
        out["tiling"] = {k: v for k, v in out["tiling"].items() if not k.startswith("budget")}
    return out


def kill_batch(tmp: Path, images: int, size: int, kills: int, seed: int) -> dict[str, object]:
    """SIGKILL ``zsir restore`` batches at seeded random moments, then finish with ``--resume``; report what was seen.

    ``images`` seeded random images of ``size`` px are restored (sr2, simulate, PnP 2 steps, built-in prior) once
    uninterrupted in this process (the reference), then by ``kills`` subprocesses (the 2nd and later with
    ``--resume``), each killed while a random set is being made: once restoration has begun (its progress bar is
    shown) and 0 or 1 more sets are complete (chosen at random), after a uniform random time in [0, w], w = 1.2 x the
    reference's time per image, doubled after each kill that finished no set; and finally by ``--resume`` in this
    process. All runs use one thread, so the arithmetic is the same in every process. After each kill every set
    must be complete or have no visible file, no visible PNG may be truncated and no JSON may lack its images.

    Returns ``complete_after_kill`` (complete sets after each kill), ``bad`` (violations), ``identical`` (the
    final outputs equal the reference: PNG bytes, JSON but the timings) and ``leftovers`` (hidden files at the end).
    """
    src = tmp / "batch"
    src.mkdir()
    for i in range(images):
        image(src / f"img{i}.png", size, seed=i)
    argv = ["restore", str(src), "--task", "sr2", "--simulate", "--sampler", "pnp", "--steps", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert cli(*argv, "--no-progress", "-o", str(tmp / "ref"))[0] == 0
        marks = sorted((tmp / "ref").glob("*.json"), key=lambda p: p.stat().st_mtime)
        per_image = (marks[-1].stat().st_mtime - marks[0].stat().st_mtime) / max(1, images - 1)
        rng, out, bad, complete = random.Random(seed), tmp / "killed", [], []
        window = 1.2 * per_image  # doubled after a kill that finished no set (a new process's first set is slower)
        for k in range(kills):
            log = tmp / f"kill{k}.log"  # its progress bar ("zsir restore: ...") appears when restoration starts
            cmd = [sys.executable, "-m", "zsir", *argv, "-o", str(out), *(["--resume"] if k else [])]
            with open(log, "wb") as f:
                proc = subprocess.Popen(cmd, env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=f)
            done = complete[-1] if complete else 0
            if done == images:
                break
            target = done + rng.randrange(min(2, images - done))  # kill while making set `target` (from 0)
            deadline = time.monotonic() + 300
            while proc.poll() is None and time.monotonic() < deadline:
                if b"zsir restore" in log.read_bytes() and len(list(out.glob("*.json"))) >= target:
                    break
                time.sleep(0.001)
            time.sleep(rng.uniform(0, window))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            complete.append(0)
            for i in range(images if out.exists() else 0):
                files = outputs.set_files(out, f"img{i}", 1)
                for p in files.values():
                    if p.suffix == ".png" and p.exists():
                        zsir.io.read_image(p)  # raises on a truncated file
                if outputs.is_complete(files):
                    complete[-1] += 1
                elif any(p.exists() for p in files.values()):
                    bad.append(f"kill {k}: img{i} partial: {sorted(p.name for p in files.values() if p.exists())}")
            window *= 2 if complete[-1] == done else 1
        rc, _, err = cli(*argv, "--no-progress", "-o", str(out), "--resume")
    finally:
        torch.set_num_threads(threads)
    if rc != 0:
        bad.append(f"final --resume exited {rc}: {err}")
    identical = sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == sorted(
        p.name for p in (tmp / "ref").iterdir()
    )
    for p in (tmp / "ref").iterdir():
        if p.suffix == ".png":
            identical &= (out / p.name).read_bytes() == p.read_bytes()
        else:
            a, b = (_reproducible(json.loads(q.read_text())) for q in (p, out / p.name))
            identical &= a == b
    leftovers = sorted(p.name for p in out.iterdir() if p.name.startswith("."))
    return {"complete_after_kill": complete, "bad": bad, "identical": identical, "leftovers": leftovers}


def kill_probe(tmp: Path, size: int, images: int, kills: int, seed: int) -> tuple[str, bool, str]:
    r = kill_batch(tmp, images, size, kills, seed)
    ok = not r["bad"] and r["identical"] and not r["leftovers"]
    detail = (
        f"{len(r['complete_after_kill'])} kills, complete sets after each: {r['complete_after_kill']}; "
        f"partial sets: {len(r['bad'])}; resume byte-identical: {r['identical']}; "
        f"temporary files left: {len(r['leftovers'])}"
    )
    return f"SIGKILL during a batch ({images} x {size}px, sr2)", ok, detail


def run() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=128, help="side of the kill probe's images")
    ap.add_argument("--images", type=int, default=12)
    ap.add_argument("--kills", type=int, default=12, help="at most; the batch may finish sooner")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        results = probes(tmp, args.size)
        results.append(kill_probe(tmp, args.size, args.images, args.kills, args.seed))
    for name, ok, detail in results:
        print(f"{'ok  ' if ok else 'FAIL'}  {name:42s} {detail}")
    print(json.dumps({"probes": len(results), "ok": sum(ok for _, ok, _ in results)}))
    return 0 if all(ok for _, ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(run())
