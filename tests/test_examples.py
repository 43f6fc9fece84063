"""Every example runs in ``--quick`` mode (a subprocess in tmp_path) and writes its figure and restorations."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SLOW = pytest.mark.slow

CASES = [
    pytest.param("ffhq_sr4_rdmd.py", ["ffhq_sr4_rdmd"], id="ffhq_sr4_rdmd"),  # the one in the default suite
    pytest.param("ffhq_inpaint_cm4ir.py", ["ffhq_inpaint_cm4ir"], id="ffhq_inpaint_cm4ir", marks=SLOW),
    pytest.param("imagenet_deblur_rdmd.py", ["imagenet_deblur_rdmd"], id="imagenet_deblur_rdmd", marks=SLOW),
    pytest.param("imagenet64_sr2_cm4ir.py", ["imagenet64_sr2_cm4ir"], id="imagenet64_sr2_cm4ir", marks=SLOW),
    pytest.param("pd_sweep.py", ["pd_sweep"], id="pd_sweep", marks=SLOW),
]


@pytest.mark.parametrize(("script", "folders"), CASES)
def test_example_quick(tmp_path, script, folders):
    if not EXAMPLES.is_dir():
        pytest.skip(f"{EXAMPLES} is absent (examples live in the source tree)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}  # no download attempts: the real prior or the built-in fallback
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--quick"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "PSNR" in proc.stdout
    for folder in folders:
        pngs = sorted((tmp_path / "outputs" / folder).glob("*.png"))
        assert pngs, proc.stdout
        for png in pngs:
            with Image.open(png) as img:
                assert img.size[0] >= 32 and img.size[1] >= 32
    if script == "pd_sweep.py":
        assert proc.stdout.count("pd=") == 5
