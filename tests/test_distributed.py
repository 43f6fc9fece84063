"""``zsir restore`` and ``zsir bench`` on several processes (``accelerate launch``, gloo on the CPU).

The multi-process runs are real: ``accelerate launch --multi_gpu --num_processes 2`` (torchrun underneath; on a
machine without CUDA the processes talk through gloo, ``--device cpu``). Their outputs are compared with a plain
in-process run, the one-process reference.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from zsir.cli import main
from zsir.cli.distributed import Processes, chunks, image_seed

pytest.importorskip("accelerate")

RESTORE = ["--task", "sr2", "--simulate", "--sampler", "ddrm", "--steps", "2", "--device", "cpu", "--no-progress"]
BATCHED = [*RESTORE, "--batch-size", "4"]  # chunks im0-im3 and im4-im5: one per process
SLOW_RESTORE = [*(a if a != "2" else "20" for a in RESTORE), "--batch-size", "2"]  # time to interrupt a run
SCORES = ("metrics", "image_seed", "nfe", "batch_size", "params")
BENCH = ["--tasks", "sr2", "--samplers", "ddrm", "--steps", "2", "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Six 32 x 32 crops of a photograph."""
    skdata = pytest.importorskip("skimage.data")
    photo = np.asarray(Image.fromarray(skdata.astronaut()).resize((128, 128), Image.LANCZOS))
    folder = tmp_path_factory.mktemp("images")
    for i in range(6):
        top, left = (i // 3) * 48, (i % 3) * 40
        Image.fromarray(photo[top : top + 32, left : left + 32]).save(folder / f"im{i}.png")
    return folder


def _restore_in_process(images: Path, out: Path, args: list[str]) -> None:
    assert main(["restore", str(images), "-o", str(out), *args]) == 0


@pytest.fixture(scope="module")
def broken(tmp_path_factory) -> Path:
    """An input that fails (not an image), the last of the second batch."""
    path = tmp_path_factory.mktemp("broken") / "broken.png"
    path.write_bytes(b"not a PNG")
    return path


@pytest.fixture(scope="module")
def reference(images, broken, tmp_path_factory) -> Path:
    """The one-process run (plain ``zsir restore``, no launcher) in batches of 4, one input failing."""
    out = tmp_path_factory.mktemp("reference") / "out"
    assert main(["restore", str(images), str(broken), "-o", str(out), *BATCHED]) == 1
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch_cmd(n: int, argv: list[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        str(n),
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(_free_port()),
        "-m",
        "zsir",
        *argv,
    ]


# the launched processes use as many threads as this one (the float reductions, hence the files, stay the same)
# `python -m zsir` from the repository root would import the source tree instead of the installed package
_NEUTRAL = tempfile.gettempdir()
_ENV = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), "HF_HUB_OFFLINE": "1"}


def _launch(n: int, argv: list[str], ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(_launch_cmd(n, argv), env=_ENV, cwd=_NEUTRAL, capture_output=True, text=True, timeout=600)
    assert (proc.returncode == 0) == ok, proc.stderr[-3000:]
    return proc


def _pngs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}


def _stats(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.iterdir()}


# ----- the seed rule and the work split (no processes) -----------------------------------------------------------
def test_image_seed_is_the_documented_sha256_rule():
    digest = hashlib.sha256(b"7\x00im3.png").digest()  # "SEED", a NUL byte, the file name
    assert image_seed(7, "im3.png") == int.from_bytes(digest[:8], "big") // 2
    assert image_seed(7, "im3.png") < 2**63 and image_seed(7, "im3.png") != image_seed(8, "im3.png")


def test_chunks_are_cut_from_the_full_list_before_skipping_finished_inputs():
    inputs = list("abcdefg")
    todo = [(x, x.upper()) for x in "acdg"]  # b, e, f finished
    assert chunks(inputs, todo, 3) == [
        [("a", "A"), ("b", None), ("c", "C")],
        [("d", "D"), ("e", None), ("f", None)],
        [("g", "G")],
    ]
    assert chunks(inputs, todo, 1) == [[("a", "A")], [("c", "C")], [("d", "D")], [("g", "G")]]
    assert chunks(inputs, [("b", "B")], 2) == [[("a", None), ("b", "B")]]


class _Bar:
    def __init__(self):
        self.n = 0

    def update(self, k):
        self.n += k


@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_each_unit_goes_to_one_process_and_all_run_the_same_rounds(monkeypatch, world):
    units = [[f"u{i}"] * (1 + i % 2) for i in range(7)]
    monkeypatch.setattr(Processes, "_sum", lambda self, n: n)  # each process counts its own images here
    seen, bars = [], []
    for rank in range(world):
        procs, bar = Processes(rank, world, None), _Bar()
        seen += [u[0] for u in procs.run(units, bar)]
        bars.append(bar.n)
    assert sorted(seen) == sorted(f"u{i}" for i in range(7))
    assert sum(bars) == sum(len(u) for u in units)


def test_subset_and_order_do_not_change_an_image(images, tmp_path):
    two, one = tmp_path / "two", tmp_path / "one"
    assert main(["restore", str(images / "im4.png"), str(images / "im1.png"), "-o", str(two), *RESTORE]) == 0
    assert main(["restore", str(images / "im1.png"), "-o", str(one), *RESTORE]) == 0
    assert _pngs(one) == {k: v for k, v in _pngs(two).items() if k.startswith("im1")}
    assert _pngs(one) != {k.replace("im4", "im1"): v for k, v in _pngs(two).items() if k.startswith("im4")}


def test_resume_restores_a_partly_finished_batch_whole(images, tmp_path):
    batched = [*RESTORE, "--batch-size", "2"]
    ref, out = tmp_path / "ref", tmp_path / "out"
    pair = [str(images / "im0.png"), str(images / "im1.png")]
    assert main(["restore", *pair, "-o", str(ref), *batched]) == 0
    out.mkdir()
    for p in ref.glob("im0*"):  # a run interrupted after the first set of the batch
        shutil.copy2(p, out / p.name)
    before = _stats(out)
    assert main(["restore", *pair, "-o", str(out), *batched, "--resume"]) == 0
    assert {k: v for k, v in _stats(out).items() if k in before} == before
    assert _pngs(out) == _pngs(ref)


def test_launcher_without_accelerate_names_the_extra(images, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setitem(sys.modules, "accelerate", None)  # import accelerate raises ImportError
    assert main(["restore", str(images), "-o", str(tmp_path / "o"), *RESTORE]) == 2
    err = capsys.readouterr().err
    assert "accelerate" in err and "pip install 'zsir[distributed]'" in err
    assert not (tmp_path / "o").exists()


def test_accelerate_cpu_flag_with_several_processes_is_explained(images, tmp_path, monkeypatch, capsys):
    from accelerate.state import PartialState

    # what `accelerate launch --cpu --num_processes 2` hands its single process (verified with accelerate 1.16)
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    try:
        assert main(["restore", str(images / "im0.png"), "-o", str(tmp_path / "o"), *RESTORE]) == 0
    finally:
        PartialState._reset_state()
    err = capsys.readouterr().err
    assert "started a single process" in err and "--multi_gpu" in err and "1 process(es) on cpu" in err


# ----- real launches --------------------------------------------------------------------------------------------
def test_two_processes_write_every_output_once_identical_to_one_process(images, broken, reference, tmp_path):
    out = tmp_path / "out"
    proc = _launch(2, ["restore", str(images), str(broken), "-o", str(out), *BATCHED], ok=False)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in reference.iterdir())  # no temp files
    assert _pngs(out) == _pngs(reference)
    for rec in reference.glob("*.json"):
        mine, theirs = json.loads((out / rec.name).read_text()), json.loads(rec.read_text())
        assert {k: mine[k] for k in SCORES} == {k: theirs[k] for k in SCORES}
    assert len(list(out.glob("*.json"))) == 6
    assert proc.stderr.count("restored into") == 1 and "2 process(es) on cpu, cpu: 6 image(s)" in proc.stderr
    assert proc.stderr.count("zsir: 1 of 7 input(s) failed:") == 1 and f"  {broken}: " in proc.stderr


@pytest.mark.slow
def test_gathered_bench_equals_one_process_bench(images, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["bench", "--dataset", str(images), "-o", str(one), *BENCH]) == 0
    _launch(2, ["bench", "--dataset", str(images), "-o", str(two), *BENCH])

    def without_seconds(path: Path) -> list[str]:  # the last column
        return [line.rsplit(",", 1)[0] for line in path.read_text().splitlines()]

    assert without_seconds(two / "bench.csv") == without_seconds(one / "bench.csv")
    assert without_seconds(two / "bench_images.csv") == without_seconds(one / "bench_images.csv")
    assert len((one / "bench_images.csv").read_text().splitlines()) == 7  # header + 6 images
    table = [line.rsplit("|", 2)[0] for line in (one / "bench.md").read_text().splitlines() if line.startswith("|")]
    assert table == [line.rsplit("|", 2)[0] for line in (two / "bench.md").read_text().splitlines() if line[:1] == "|"]
    head = (two / "bench.md").read_text().splitlines()[0]
    assert "2 process(es) on cpu, cpu: 6 image(s)" in head and "images/s" in head


def _interrupted(cmd: list[str], out: Path) -> str:
    """Start ``cmd``; SIGTERM its whole process group as soon as the first output set is complete."""
    proc = subprocess.Popen(
        cmd, env=_ENV, cwd=_NEUTRAL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    deadline = time.monotonic() + 300
    while not list(out.glob("*.json")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):  # it may have ended already: the assertion below reports it
        os.killpg(proc.pid, signal.SIGTERM)
    return proc.communicate(timeout=120)[1]


@pytest.mark.slow
@pytest.mark.parametrize(("first", "then"), [(2, 1), (1, 2)])
def test_interrupted_run_resumed_with_other_process_count(images, tmp_path, first, then):
    ref = tmp_path / "ref"
    _restore_in_process(images, ref, SLOW_RESTORE)
    out = tmp_path / "out"
    argv = ["restore", str(images), "-o", str(out), *SLOW_RESTORE]
    log = _interrupted(_launch_cmd(first, argv) if first > 1 else [sys.executable, "-m", "zsir", *argv], out)
    finished = [p.stem for p in out.glob("*.json")]
    assert 0 < len(finished) < 6, f"the run was not interrupted half-way ({len(finished)} of 6 sets):\n{log[-2000:]}"
    before = {k: v for k, v in _stats(out).items() if k.split(".")[0].removesuffix("_grid") in finished}
    if then > 1:
        _launch(then, [*argv, "--resume"])
    else:
        assert main([*argv, "--resume"]) == 0
    after = _stats(out)
    assert {k: after.get(k) for k in before} == before, "finished files were touched"
    assert sorted(after) == sorted(p.name for p in ref.iterdir()), f"{sorted(after)}\n{log[-2000:]}"
    assert _pngs(out) == _pngs(ref)
