"""The shipped built-in prior: weights load, are small, and denoise a real image."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from zsir.models.builtin import WEIGHTS_DIR, load_builtin_prior, load_shipped

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "denoise.py"


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(-10 * torch.log10(((a - b) ** 2).mean()))


def _astronaut(size: int = 256) -> torch.Tensor:
    from skimage import data

    img = torch.from_numpy(data.astronaut().astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    return img[..., 100 : 100 + size, 150 : 150 + size].contiguous()  # face, helmet and flag: edges and texture


def test_shipped_files_are_small_and_documented():
    st, js = WEIGHTS_DIR / "builtin.safetensors", WEIGHTS_DIR / "builtin.json"
    assert st.stat().st_size < 5 * 2**20
    meta = json.loads(js.read_text())
    assert meta["arch"] == "NDRRestore" and meta["sigma_max"] >= 1.0
    assert meta["training"]["steps"] > 0 and meta["training"]["data"]
    assert not any("kodak" in d or "mcmaster" in d or "ffhq" in d or "imagenet" in d for d in meta["training"]["data"])
    model = load_shipped()
    assert model.degradation_net is None and not any(p.requires_grad for p in model.parameters())


def test_builtin_prior_denoises_astronaut_by_4db():
    prior = load_builtin_prior()
    clean = _astronaut()
    sigma = 25 / 255
    noisy = clean + sigma * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out_model = prior.denoise(2 * noisy - 1, 2 * sigma)  # [-1, 1] images, model-unit sigma
    out = ((out_model + 1) / 2).clamp(0, 1)
    gain = _psnr(out, clean) - _psnr(noisy.clamp(0, 1), clean)
    assert out.shape == clean.shape
    assert gain >= 4.0, f"built-in prior gains only {gain:.2f} dB at sigma 25/255"
    assert prior.kind == "mmse" and prior.sigma_max >= 2.0  # model units


def test_builtin_matches_the_network_in_image_units():
    prior = load_builtin_prior(dtype=torch.float64)
    net = load_shipped(dtype=torch.float64)
    x = _astronaut(40).double()  # 40 is not a multiple of 4: exercises the padding
    y = x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        via_prior = (prior.denoise(2 * y - 1, 0.2) + 1) / 2
        direct = net.restore(y, sigma=0.1)
    assert torch.allclose(via_prior.clamp(0, 1), direct, atol=1e-6)


def test_denoise_benchmark_quick(tmp_path):
    if not BENCH.is_file():
        pytest.skip(f"{BENCH} is not part of this checkout")
    out = tmp_path / "rows.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--threads", "1", "--json", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {r["method"]: r for r in json.loads(out.read_text())}
    assert set(rows) == {"noisy", "wiener", "builtin"}
    assert rows["builtin"]["psnr"] > rows["wiener"]["psnr"] > rows["noisy"]["psnr"]


def test_restoration_benchmark_quick(tmp_path):
    bench = BENCH.parent / "restoration.py"
    if not bench.is_file():
        pytest.skip(f"{bench} is not part of this checkout")
    out = tmp_path / "rows.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(bench),
            "--quick",
            "--threads",
            "1",
            "--samplers",
            "rdmd",
            "cm4ir",
            "--pd",
            "0",
            "1",
            "--json",
            str(out),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())
    samplers = {f"{s} pd={pd}" for s in ("rdmd", "cm4ir") for pd in (0, 1)}
    assert {(r["task"], r["method"]) for r in rows} == {
        (t, m) for t in ("sr4", "inpaint-random:0.8") for m in samplers
    } | {
        ("sr4", "bicubic"),
        ("sr4", "pinv"),
        ("inpaint-random:0.8", "pinv"),
        ("inpaint-random:0.8", "interp"),
    }
    for r in rows:
        assert np.isfinite([r["psnr"], r["ssim"], r["haarpsi"]]).all() and r["psnr"] > 3
        assert (r["nfe"] > 0) == (r["method"] in samplers)
    inpaint = {r["method"]: r["psnr"] for r in rows if r["task"] == "inpaint-random:0.8"}
    assert min(inpaint[m] for m in samplers) > inpaint["pinv"] + 3  # the prior fills the holes
    sr = {r["method"]: r for r in rows if r["task"] == "sr4"}
    assert sr["rdmd pd=0"]["psnr"] != sr["rdmd pd=1"]["psnr"]  # the knob reaches the sampler
