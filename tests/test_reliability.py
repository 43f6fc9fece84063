"""Nothing lost, nothing silent: one test per failure of the new-user probes (bad inputs, kills, full disks).

Output sets (zsir.cli.outputs), --resume with changed parameters, argument checks of zsir.solve, unreadable
checkpoints, CLI messages and help, the priors listing, and a fault-injection test that SIGKILLs a batch.
"""

from __future__ import annotations

import errno
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import zsir
from zsir import io as zio
from zsir.cli import build_parser, main, outputs
from zsir.operators import BicubicSR, Identity
from zsir.priors import CheckpointError, load_prior

FAST = ["--sampler", "pnp", "--steps", "1", "--no-progress"]


def _image(path: Path, size: int = 16, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def _visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ----- output sets ----------------------------------------------------------------------------------------------
def _contents(files):
    return {k: f"content of {k}".encode() for k in files}


def test_publish_renames_the_json_last_and_removes_an_older_json_first(tmp_path, monkeypatch):
    files = outputs.set_files(tmp_path, "a", num_samples=2)
    files["json"].write_text(json.dumps({"zsir_version": "old", "outputs": {"restored": "a.png"}}))
    events, real_replace, real_unlink = [], os.replace, Path.unlink

    def replace(src, dst):
        events.append(("replace", Path(dst).name))
        real_replace(src, dst)

    def unlink(self, missing_ok=False):
        events.append(("unlink", self.name))
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(outputs.os, "replace", replace)
    monkeypatch.setattr(Path, "unlink", unlink)
    outputs.publish(files, _contents(files))
    renames = [name for kind, name in events if kind == "replace"]
    assert renames == ["a.png", "a_grid.png", "a_s0.png", "a_s1.png", "a.json"]
    assert events.index(("unlink", "a.json")) < events.index(("replace", "a.png"))
    assert files["restored"].read_bytes() == b"content of restored" and _hidden(tmp_path) == []


def test_publish_failing_midway_leaves_no_file_of_the_set(tmp_path, monkeypatch):
    files = outputs.set_files(tmp_path, "a", num_samples=1)
    real, calls = os.replace, []

    def flaky(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(outputs.os, "replace", flaky)
    with pytest.raises(OSError, match="No space"):
        outputs.publish(files, _contents(files))
    assert list(tmp_path.iterdir()) == []  # neither the renamed a.png nor any temporary file


def test_publish_removes_sample_files_of_an_earlier_larger_set(tmp_path):
    big = outputs.set_files(tmp_path, "a", num_samples=3)
    contents = _contents(big)
    contents["json"] = json.dumps({"zsir_version": "x", "outputs": {k: p.name for k, p in big.items()}}).encode()
    outputs.publish(big, contents)
    small = outputs.set_files(tmp_path, "a", num_samples=1)
    outputs.publish(small, _contents(small))
    assert _visible(tmp_path) == ["a.json", "a.png", "a_grid.png"]


def test_clashing_output_names_are_a_usage_error(tmp_path):
    a, b = _image(tmp_path / "a.png"), _image(tmp_path / "a_grid.png")  # b's restoration would be a's grid
    assert main(["restore", str(a), str(b), "-o", str(tmp_path / "o"), "--task", "denoise", *FAST]) == 2


# ----- --resume and --overwrite ---------------------------------------------------------------------------------
@pytest.fixture
def done(tmp_path):
    """One finished output set (pnp, seed 0) and the arguments that made it."""
    src = _image(tmp_path / "astro.png")
    args = ["restore", str(src), "-o", str(tmp_path / "out"), "--task", "denoise", "--simulate", *FAST]
    assert main(args) == 0
    return tmp_path / "out", args


def test_resume_refuses_other_parameters_and_names_them(done, capsys):
    out, args = done
    before = (out / "astro.png").read_bytes()
    changed = [a if a != "pnp" else "ddrm" for a in args] + ["--seed", "3"]
    capsys.readouterr()
    assert main([*changed, "--resume"]) == 2
    err = capsys.readouterr().err
    assert "sampler 'pnp' (now 'ddrm')" in err and "seed 0 (now 3)" in err and "--overwrite" in err
    assert (out / "astro.png").read_bytes() == before
    assert main([*changed, "--overwrite"]) == 0
    rec = json.loads((out / "astro.json").read_text())
    assert rec["sampler"] == "ddrm" and rec["request"]["seed"] == 3
    assert main([*changed, "--resume"]) == 0 and "nothing to do" in capsys.readouterr().err


def test_resume_and_overwrite_together_is_a_usage_error(done, capsys):
    _, args = done
    assert main([*args, "--resume", "--overwrite"]) == 2
    assert "contradict" in capsys.readouterr().err


def test_resume_redoes_incomplete_sets_and_clears_temporary_files(done, capsys):
    out, args = done
    reference = (out / "astro.png").read_bytes()
    (out / "astro.json").unlink()
    (out / "astro_grid.png").unlink()  # a kill during the renames leaves such a set
    for name in (".astro.png.k3j2.tmp", ".astro_grid.png.x1.tmp", ".zsir-write-probe.q.tmp"):
        (out / name).write_bytes(b"partial")
    (out / ".other.png.a.tmp").write_bytes(b"not ours")
    assert main([*args, "--resume"]) == 0
    assert "removed 3 temporary file(s)" in capsys.readouterr().err
    assert _visible(out) == ["astro.json", "astro.png", "astro_grid.png"]
    assert _hidden(out) == [".other.png.a.tmp"] and (out / "astro.png").read_bytes() == reference


def test_resume_refuses_sets_without_recorded_parameters(done, capsys):
    out, args = done
    rec = json.loads((out / "astro.json").read_text())
    del rec["request"]
    (out / "astro.json").write_text(json.dumps(rec))
    assert main([*args, "--resume"]) == 2
    assert "did not record its parameters" in capsys.readouterr().err


# ----- the output folder is checked before any restoration -------------------------------------------------------
@pytest.fixture
def no_solve(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("zsir.solve must not run")

    monkeypatch.setattr(zsir, "solve", refuse)


def test_unwritable_output_folder_is_found_before_restoring(tmp_path, capsys, no_solve):
    src = _image(tmp_path / "a.png")
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    assert main(["restore", str(src), "-o", str(blocker / "out"), "--task", "denoise", *FAST]) == 2
    assert "cannot write to the output folder" in capsys.readouterr().err


def test_full_disk_is_found_before_restoring(tmp_path, capsys, monkeypatch, no_solve):
    src = _image(tmp_path / "a.png")

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(zio, "stage_file", full)
    assert main(["restore", str(src), "-o", str(tmp_path / "out"), "--task", "denoise", *FAST]) == 2
    assert "No space left" in capsys.readouterr().err and not (tmp_path / "out").exists()
    monkeypatch.undo()
    monkeypatch.setattr(zsir, "solve", lambda *a, **k: pytest.fail("zsir.solve must not run"))
    monkeypatch.setattr(outputs.shutil, "disk_usage", lambda p: _Usage())
    assert main(["restore", str(src), "-o", str(tmp_path / "out"), "--task", "sr4", *FAST]) == 2
    assert "MiB are free" in capsys.readouterr().err


class _Usage:
    total, used, free = 10**9, 10**9, 1000


def test_probe_folders_are_removed_only_while_empty(tmp_path, monkeypatch):
    """The probe removes the folders it created, but not one another process wrote into meanwhile (a second rank
    of a distributed run publishing its first output): that used to raise OSError (directory not empty)."""
    fresh = tmp_path / "a" / "b"
    outputs.check_writable(fresh)
    assert not (tmp_path / "a").exists()

    stage = zio.stage_file

    def other_rank_writes(path, data):
        (path.parent / "x.png").write_bytes(b"written by another process")
        return stage(path, data)

    monkeypatch.setattr(zio, "stage_file", other_rank_writes)
    shared = tmp_path / "c" / "d"
    outputs.check_writable(shared)
    assert [p.name for p in shared.iterdir()] == ["x.png"]


def test_estimate_bounds_the_written_bytes(tmp_path):
    src = _image(tmp_path / "a.png", size=24)
    out = tmp_path / "out"
    assert main(["restore", str(src), "-o", str(out), "--task", "sr2", "--bit-depth", "16", *FAST]) == 0
    written = sum(p.stat().st_size for p in out.iterdir())
    assert written <= outputs.estimate_bytes([src], 2, 1, 16)


# ----- CLI messages -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("extra", "message", "absent"),
    [
        (["--sigma-y", "2"], "argument --sigma-y: expected a number in [0, 1], got 2", None),
        (["--task", "sr3"], "factors are 2, 4 and 8", "Did you mean"),
        (["--device", "gpu"], "expected auto, cpu, cuda or cuda:N", None),
        (["--prior", "missing.pt"], "no such file", None),
        (["--param", "x"], "argument --param: expected KEY=VALUE", None),
    ],
)
def test_usage_messages(tmp_path, capsys, extra, message, absent):
    src = _image(tmp_path / "a.png")
    assert main(["restore", str(src), "-o", str(tmp_path / "o"), "--task", "sr4", *FAST, *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and (absent is None or absent not in err)
    flag = extra[0]
    assert err.count(flag) <= 1  # the flag is named once at most, never twice
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_device_without_cuda(tmp_path, capsys, no_solve):
    src = _image(tmp_path / "a.png")
    assert main(["restore", str(src), "-o", str(tmp_path / "o"), "--task", "denoise", "--device", "cuda:1"]) == 2
    assert "--device cuda:1: CUDA is not available" in capsys.readouterr().err


def test_tiny_image_error_names_the_minimum_size(tmp_path, capsys):
    src = _image(tmp_path / "tiny.png", size=1)
    assert main(["restore", str(src), "-o", str(tmp_path / "o"), "--task", "sr4", "--simulate", *FAST]) == 1
    err = capsys.readouterr().err
    assert "at least 4x4" in err and "0x0" not in err


def test_text_file_as_mask_says_it_is_the_mask(tmp_path, capsys):
    src = _image(tmp_path / "a.png")
    mask = tmp_path / "mask.png"
    mask.write_text("this is not an image\n")
    assert main(["restore", str(src), "-o", str(tmp_path / "o"), "--task", f"inpaint-mask:{mask}", *FAST]) == 2
    assert f"mask file {mask}: cannot read it" in capsys.readouterr().err


def test_prior_config_reaches_load_prior(tmp_path, capsys, monkeypatch):
    seen = {}

    def fake_load(name, **kwargs):
        seen.update(kwargs, name=name)
        raise ValueError("stop here")

    monkeypatch.setattr(zsir.priors, "load_prior", fake_load)
    src = _image(tmp_path / "a.png")
    argv = ["restore", str(src), "-o", str(tmp_path / "o"), "--task", "denoise", "--prior", "w.pt", *FAST]
    assert main([*argv, "--prior-config", "ffhq256"]) == 2
    assert seen["config"] == "ffhq256" and seen["name"] == "w.pt" and "stop here" in capsys.readouterr().err


def _restore_parser():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return sub.choices["restore"]


def test_restore_help_is_whole_plain_text_with_every_default(capsys):
    assert main(["restore", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--simulate          each input is a clean image" in text and "Every restoration goes through" in text
    assert "``" not in text and "**" not in text and ":func:" not in text
    parser = _restore_parser()
    formatter = parser._get_formatter()
    for action in parser._actions:
        if action.option_strings and not action.required and action.dest != "help":
            assert "default" in formatter._expand_help(action), action.dest


def test_grid_labels_grow_with_the_image():
    def text_height(width: int) -> int:
        panel = torch.ones(3, width, width)
        grid = np.asarray(Image.open(__import__("io").BytesIO(zio.grid_image([("label", panel)], (width, width)))))
        dark = np.nonzero((grid[: width // 8].min(-1) < 128).any(1))[0]  # rows of the label band with ink
        return int(dark.max() - dark.min() + 1)

    small, large = text_height(160), text_height(1024)
    assert small >= 8 and large >= 3 * small


# ----- zsir priors ------------------------------------------------------------------------------------------------
def test_priors_listing_has_licences_and_flags_a_corrupt_cached_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ZSIR_CACHE", str(tmp_path))
    (tmp_path / "downloads").mkdir()
    good = {"w": torch.zeros(64)}
    torch.save(good, tmp_path / "downloads" / "256x256_diffusion_uncond.pt")
    data = (tmp_path / "downloads" / "256x256_diffusion_uncond.pt").read_bytes()
    (tmp_path / "downloads" / "256x256_diffusion_uncond.pt").write_bytes(data[: len(data) // 2])
    assert main(["priors"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["name", "cached", "size", "licence"]
    imagenet = next(line for line in out.splitlines() if line.startswith("imagenet "))
    assert "CORRUPT" in imagenet and "problem: " in out and "truncated" in out
    assert next(line for line in out.splitlines() if line.startswith("builtin")).split()[1] == "yes"


# ----- zsir.solve argument checks ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def measurement():
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    return x, BicubicSR(2), BicubicSR(2).A(x)


def test_solve_rejects_0_255_measurements(measurement):
    _, op, y = measurement
    with pytest.raises(ValueError, match=r"y: values up to .*0-255 pixel values\? divide y by 255"):
        zsir.solve(y * 255, op, sampler="pnp", steps=1, progress=False)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"generator": "abc"}, "generator"),
        ({"generator": 1.5}, "generator"),
        ({"generator": True}, "generator"),
        ({"generator": 2**70}, "generator"),
        ({"sigma_y": "0.1"}, "sigma_y"),
        ({"sigma_y": 2.0}, "sigma_y"),
        ({"pd": "x"}, "pd"),
        ({"pd": 1.5}, "pd"),
        ({"steps": 0}, "steps"),
        ({"steps": 2.5}, "steps"),
        ({"preset": 3}, "preset"),
        ({"num_samples": 0}, "num_samples"),
        ({"num_samples": True}, "num_samples"),
        ({"progress": "yes"}, "progress"),
        ({"return_result": None}, "return_result"),
        ({"sampler": 3}, "sampler"),
        ({"prior": 3}, "prior"),
    ],
)
def test_solve_names_every_bad_argument(measurement, kwargs, name):
    _, op, y = measurement
    with pytest.raises((TypeError, ValueError)) as info:
        zsir.solve(y, op, **{"sampler": "pnp", "steps": 1, "progress": False, **kwargs})
    assert str(info.value).startswith(f"{name}:"), str(info.value)


def test_solve_names_a_bad_operator_and_y(measurement):
    x, _, y = measurement
    with pytest.raises(TypeError, match="^operator:"):
        zsir.solve(y, "sr2")
    with pytest.raises(TypeError, match="^y:"):
        zsir.solve(y.numpy(), Identity())


def test_solve_accepts_a_generator_and_numpy_integer_seeds(measurement):
    _, op, y = measurement
    a = zsir.solve(y, op, sampler="pnp", steps=1, progress=False, generator=np.int64(3))
    b = zsir.solve(y, op, sampler="pnp", steps=1, progress=False, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


# ----- unreadable checkpoints ------------------------------------------------------------------------------------
@pytest.fixture
def checkpoints(tmp_path):
    from safetensors.torch import save_file

    state = {"w": torch.randn(256, 16)}
    save_file(state, tmp_path / "ok.safetensors")
    torch.save(state, tmp_path / "ok.pt")
    for name in ("ok.safetensors", "ok.pt"):
        data = (tmp_path / name).read_bytes()
        (tmp_path / name.replace("ok", "trunc")).write_bytes(data[: len(data) * 2 // 3])
    (tmp_path / "garbage.pt").write_bytes(b"<html>404 not found</html>" * 40)
    return tmp_path


@pytest.mark.parametrize(
    ("name", "problem"),
    [("trunc.safetensors", "truncated"), ("trunc.pt", "truncated"), ("garbage.pt", "not a checkpoint")],
)
def test_unreadable_checkpoints_are_named_before_config_is_asked(checkpoints, name, problem):
    with pytest.raises(CheckpointError) as info:
        load_prior(checkpoints / name)
    msg = str(info.value)
    assert name in msg and problem in msg and "config" not in msg and "weights_only" not in msg
    with pytest.raises(CheckpointError, match=problem):
        load_prior(checkpoints / name, config="ffhq256")


def test_sound_checkpoints_pass_the_structure_check(checkpoints):
    from zsir.priors.hub import checkpoint_problem, read_state_dict

    assert (
        checkpoint_problem(checkpoints / "ok.safetensors") is None and checkpoint_problem(checkpoints / "ok.pt") is None
    )
    assert torch.equal(
        read_state_dict(checkpoints / "ok.pt")["w"], read_state_dict(checkpoints / "ok.safetensors")["w"]
    )


def test_pickled_objects_never_suggest_weights_only_false(tmp_path):
    from zsir.priors.hub import read_state_dict

    torch.save({"w": torch.zeros(2), "opt": Path("x")}, tmp_path / "obj.pt")
    with pytest.raises(CheckpointError) as info:
        read_state_dict(tmp_path / "obj.pt")
    assert "weights_only" not in str(info.value) and "state_dict" in str(info.value)


def test_cli_reports_a_truncated_prior_file(checkpoints, tmp_path, capsys):
    src = _image(tmp_path / "a.png")
    argv = ["restore", str(src), "-o", str(tmp_path / "o"), "--task", "denoise", *FAST]
    assert main([*argv, "--prior", str(checkpoints / "trunc.safetensors")]) == 1
    err = capsys.readouterr().err
    assert "truncated" in err and "config=" not in err


def test_load_prior_missing_local_path_says_no_such_file(tmp_path):
    for missing in ("missing.pt", str(tmp_path / "nope" / "model"), "./model.safetensors"):
        with pytest.raises(FileNotFoundError, match="no such file"):
            load_prior(missing)


# ----- fault injection: SIGKILL at seeded random moments ----------------------------------------------------------
def _probes():
    spec = importlib.util.spec_from_file_location("zsir_probes", Path(__file__).parents[1] / "benchmarks" / "probes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_killed_batch_leaves_whole_sets_and_resumes_byte_identical(tmp_path):
    r = _probes().kill_batch(tmp_path, images=3, size=16, kills=1, seed=0)
    assert r["bad"] == [] and r["identical"] and r["leftovers"] == [], r


@pytest.mark.slow
def test_many_kills_leave_whole_sets_and_resume_byte_identical(tmp_path):
    r = _probes().kill_batch(tmp_path, images=8, size=48, kills=10, seed=1)
    assert r["bad"] == [] and r["identical"] and r["leftovers"] == [], r
    counts = r["complete_after_kill"]
    assert any(0 < c < 8 for c in counts), f"no kill landed inside the batch: {counts}"
