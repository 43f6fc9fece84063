"""The ``zsir`` command line end to end on a real photograph (skimage astronaut) with the built-in prior.

Most tests call :func:`zsir.cli.main` in-process; one runs ``python -m zsir`` as a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import zsir
from zsir.cli import main
from zsir.samplers.rdmd import RDMD

FAST = ["--sampler", "ddrm", "--steps", "2", "--no-progress"]


@pytest.fixture(scope="module")
def astro_array() -> np.ndarray:
    skdata = pytest.importorskip("skimage.data")
    return np.asarray(Image.fromarray(skdata.astronaut()).resize((64, 64), Image.LANCZOS))


@pytest.fixture
def astro(tmp_path, astro_array):
    path = tmp_path / "astro.png"
    Image.fromarray(astro_array).save(path)
    return path


def _no_temp_files(folder):
    return not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def test_restore_simulate_writes_png_grid_json(tmp_path, astro, capsys):
    out = tmp_path / "out"
    rc = main(
        [
            "restore",
            str(astro),
            "-o",
            str(out),
            "--task",
            "sr4",
            "--simulate",
            "--sampler",
            "rdmd",
            "--steps",
            "3",
            "--sigma-y",
            "0.05",
            "--pd",
            "0.5",
            "--no-progress",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    assert Image.open(out / "astro.png").size == (64, 64)
    grid = Image.open(out / "astro_grid.png")
    assert grid.mode == "RGB" and grid.size[0] > 3 * 64  # measurement | restoration | ground truth
    rec = json.loads((out / "astro.json").read_text())
    assert rec["zsir_version"] == zsir.__version__ and rec["mode"] == "simulate"
    assert rec["sampler"] == "rdmd" and rec["prior"] == "builtin" and rec["pd"] == 0.5 and rec["steps"] == 3
    # pd 0.5 half-way from the tuned preset for rdmd / builtin / sr4 to RDMD's perceptual end texture = 2; --steps wins
    assert rec["pd_anchor"] == "tuned-sr4" and rec["nfe"] > 0 and rec["seconds"] > 0
    assert rec["params"]["texture"] == pytest.approx(1.0)
    assert rec["params"]["tau"] == pytest.approx(RDMD.preset("tuned-sr4").params["tau"])
    m = rec["metrics"]
    assert 10 < m["psnr"] < 40 and 0 < m["ssim"] <= 1 and 0 < m["haarpsi"] <= 1 and m["mdsi"] > 0
    assert m["lpips"] is not None or "lpips" in rec["metrics_unavailable"]
    assert _no_temp_files(out)


def test_measured_sr_output_is_larger_and_16bit(tmp_path, astro_array):
    lr = tmp_path / "lr.png"
    Image.fromarray(astro_array[:30, :22]).save(lr)  # any size works in measured mode
    out = tmp_path / "out"
    assert main(["restore", str(lr), "-o", str(out), "--task", "sr2", "--bit-depth", "16", *FAST]) == 0
    width, height, bit_depth, _, _ = zsir.io._png_header(out / "lr.png")
    assert (width, height, bit_depth) == (44, 60, 16)
    assert zsir.io.read_image(out / "lr.png").shape == (1, 3, 60, 44)
    rec = json.loads((out / "lr.json").read_text())
    assert rec["mode"] == "measured" and rec["metrics"] is None and rec["measurement_shape"] == [1, 3, 30, 22]


def test_resume_skips_and_existing_outputs_are_protected(tmp_path, astro, capsys):
    out = tmp_path / "out"
    args = ["restore", str(astro), "-o", str(out), "--task", "denoise", "--simulate", *FAST]
    assert main(args) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert main(args) == 2  # no --overwrite: clear error, nothing touched
    err = capsys.readouterr().err
    assert err.startswith("zsir: error:") and "astro.png" in err and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    mtimes = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    assert main([*args, "--resume"]) == 0
    assert {p: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes
    (out / "astro.json").unlink()  # an incomplete set is redone by --resume
    assert main([*args, "--resume"]) == 0 and (out / "astro.json").is_file()


def test_batch_with_bad_inputs_goes_on(tmp_path, astro_array, capsys):
    src = tmp_path / "in"
    src.mkdir()
    small = astro_array[:32, :32]
    Image.fromarray(small).save(src / "good.png")
    Image.fromarray(small).convert("L").save(src / "grey.png")
    rgba = np.concatenate([small, np.full((32, 32, 1), 128, np.uint8)], axis=2)
    Image.fromarray(rgba, "RGBA").save(src / "rgba.png")
    Image.fromarray(small[..., 0].astype(np.uint16) * 257).save(src / "deep.png")  # 16-bit grey
    nan = np.full((32, 32, 3), 0.5, np.float32)
    nan[3, 3, 1] = np.nan
    np.save(src / "nan.npy", nan)
    np.save(src / "inf.npy", np.full((32, 32), np.inf, np.float32))
    Image.fromarray(astro_array[:30, :30]).save(src / "odd.png")  # 30 is not divisible by 4
    out = tmp_path / "out"
    rc = main(
        [
            "restore",
            str(src),
            str(tmp_path / "missing.png"),
            "-o",
            str(out),
            "--task",
            "sr4",
            "--simulate",
            "--batch-size",
            "3",
            *FAST,
        ]
    )
    err = capsys.readouterr().err
    assert rc == 1
    assert "4 of 8 input(s) failed" in err
    assert "missing.png" in err and "nan.npy" in err and "inf.npy" in err and "NaN or inf" in err
    assert "not divisible by the sr4 factor 4" in err
    assert "composited on a white" in err and "grey" in err.lower()
    for stem in ("good", "grey", "rgba", "deep"):
        assert json.loads((out / f"{stem}.json").read_text())["metrics"]["psnr"] > 5
    assert not (out / "nan.json").exists() and _no_temp_files(out)


def test_interrupted_batch_leaves_complete_outputs_only(tmp_path, astro_array, monkeypatch, capsys):
    for name in ("a", "b"):
        Image.fromarray(astro_array[:32, :32]).save(tmp_path / f"{name}.png")
    real, calls = zsir.solve, []

    def solve_then_interrupt(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(zsir, "solve", solve_then_interrupt)
    out = tmp_path / "out"
    rc = main(
        [
            "restore",
            str(tmp_path / "a.png"),
            str(tmp_path / "b.png"),
            "-o",
            str(out),
            "--task",
            "denoise",
            "--simulate",
            *FAST,
        ]
    )
    assert rc == 130 and "--resume" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "a.png", "a_grid.png"]


def test_failed_write_removes_the_input_s_outputs(tmp_path, astro, monkeypatch, capsys):
    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(zsir.io, "grid_image", broken)  # fails after the restored PNG was written
    out = tmp_path / "out"
    assert main(["restore", str(astro), "-o", str(out), "--task", "denoise", "--simulate", *FAST]) == 1
    assert "disk full" in capsys.readouterr().err
    assert list(out.iterdir()) == []


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--sampler", "rdmb"], "Did you mean 'rdmd'"),
        (["--prior", "buildin"], "Did you mean 'builtin'"),
        (["--task", "sr3"], "factors are 2, 4 and 8"),
        (["--task", "deblur-gaus"], "Did you mean 'deblur-gauss'"),
        (["--sigma-y", "1.5"], "--sigma-y: expected a number in [0, 1], got 1.5"),
        (["--sigma-y", "-0.1"], "--sigma-y"),
        (["--pd", "2"], "--pd"),
        (["--param", "lambda=3"], "Did you mean 'lambda_'"),
        (["--task", "inpaint-random"], "--simulate"),
    ],
)
def test_usage_errors_exit_2_with_suggestion(tmp_path, astro, capsys, extra, message):
    argv = ["restore", str(astro), "-o", str(tmp_path / "o"), "--task", "sr4", "--no-progress"]
    rc = main(argv + extra)
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("zsir: error:") and message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_kernel_and_mask_files_of_wrong_shape(tmp_path, astro, capsys):
    np.save(tmp_path / "k3.npy", np.ones((3, 3, 3)))
    rc = main(["restore", str(astro), "-o", str(tmp_path / "o"), "--task", f"deblur-kernel:{tmp_path / 'k3.npy'}"])
    assert rc == 2 and "1-D or 2-D kernel" in capsys.readouterr().err
    np.savetxt(tmp_path / "k.txt", np.ones(4))
    rc = main(["restore", str(astro), "-o", str(tmp_path / "o"), "--task", f"deblur-kernel:{tmp_path / 'k.txt'}"])
    assert rc == 2
    assert "odd length" in capsys.readouterr().err
    mask = np.ones((16, 16), np.uint8) * 255
    mask[4:8, 4:8] = 0
    Image.fromarray(mask).save(tmp_path / "mask.png")
    rc = main(
        ["restore", str(astro), "-o", str(tmp_path / "o"), "--task", f"inpaint-mask:{tmp_path / 'mask.png'}", *FAST]
    )
    assert rc == 1 and "does not match the image size" in capsys.readouterr().err


def test_measured_inpainting_with_mask_file(tmp_path, astro):
    mask = np.full((64, 64), 255, np.uint8)
    mask[20:40, 20:40] = 0
    Image.fromarray(mask).save(tmp_path / "mask.png")
    out = tmp_path / "out"
    assert main(["restore", str(astro), "-o", str(out), "--task", f"inpaint-mask:{tmp_path / 'mask.png'}", *FAST]) == 0
    restored = zsir.io.read_image(out / "astro.png")
    original = zsir.io.read_image(astro)
    observed = (original - restored).abs()[..., :20, :].mean()
    assert float(observed) < 0.1  # observed pixels stay close to the input


def test_bench_writes_markdown_and_csv(tmp_path, astro_array, capsys):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(2):
        Image.fromarray(astro_array[i * 8 : i * 8 + 34, :34]).save(data / f"{i}.png")  # cropped to 32x32
    out = tmp_path / "bench"
    rc = main(
        [
            "bench",
            "--dataset",
            str(data),
            "--tasks",
            "sr4,denoise",
            "--samplers",
            "ddrm",
            "--limit",
            "1",
            "--steps",
            "2",
            "-o",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    md = (out / "bench.md").read_text()
    assert "| task | sampler | images | PSNR | SSIM | LPIPS | HaarPSI | MDSI | NFE | s/image |" in md
    assert "| sr4 | ddrm | 1 |" in md and "| denoise | ddrm | 1 |" in md
    rows = (out / "bench.csv").read_text().splitlines()
    assert rows[0].startswith("task,sampler,images,psnr") and len(rows) == 3
    lpips_path, _ = zsir.metrics.lpips_weights_path("vgg")
    assert ("n/a" in md) != lpips_path.is_file()


def test_priors_lists_names(capsys):
    assert main(["priors"]) == 0
    out = capsys.readouterr().out
    for name in ("builtin", "ffhq", "imagenet", "celebahq", "bedroom-cm", "cat-cm", "imagenet64-cm"):
        assert name in out
    assert "cached" in out.splitlines()[0]


def test_python_m_zsir_subprocess(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "zsir", "restore", "x.png", "-o", "o", "--task", "sr4x"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("zsir: error: unknown task 'sr4x'") and "Traceback" not in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "zsir", "--version"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and zsir.__version__ in proc.stdout


def test_prior_valued_param_is_loaded_by_name_and_recorded(tmp_path, astro, capsys):
    """RDMD's dual-network variant from the CLI: ``--param deterministic_prior=NAME`` loads that prior for the
    deterministic branch (a bad name is a usage error naming the option) and the JSON records the name."""
    argv = ["restore", str(astro), "--task", "deblur-gauss", "--simulate", "--sampler", "rdmd", "--steps", "3"]
    argv += ["--sigma-y", "0.05", "--no-progress", "--param", "deterministic_prior=builtin", "-o"]
    assert main(argv + [str(tmp_path / "ok")]) == 0, capsys.readouterr().err
    rec = json.loads((tmp_path / "ok" / "astro.json").read_text())
    assert rec["params"]["deterministic_prior"] == "builtin" and rec["nfe"] > 0
    rc = main(argv[:-3] + ["--param", "deterministic_prior=no-such-prior", "-o", str(tmp_path / "bad")])
    err = capsys.readouterr().err
    assert rc == 2 and "--param deterministic_prior" in err and "Traceback" not in err
    rc = main(argv[:-3] + ["--param", "deterministic_prior=3", "-o", str(tmp_path / "num")])  # not a name
    assert rc == 2 and "deterministic_prior: expected a Prior" in capsys.readouterr().err
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.png").write_bytes(astro.read_bytes())
    bench = ["bench", "--dataset", str(data), "--tasks", "denoise", "--samplers", "rdmd", "--steps", "3"]
    rc = main(bench + ["--param", "deterministic_prior=builtin", "-o", str(tmp_path / "b"), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
