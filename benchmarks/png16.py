"""Decode time of a 512x512 RGB 16-bit PNG whose rows are all Paeth-filtered, through ``zsir.io.read_image``.

The image is skimage's astronaut (512x512) scaled to 16 bits with seeded random low bits, written by OpenCV with
``IMWRITE_PNG_FILTER = PAETH`` (the script checks that every row carries filter type 4). ``--io FILE`` times the
``read_image`` of another version of ``zsir/io.py`` (e.g. ``git show REV:zsir/io.py > old_io.py``).

Example::

    OMP_NUM_THREADS=1 nice python benchmarks/png16.py --repeat 5
    git show 8995be8:zsir/io.py > /tmp/old_io.py
    OMP_NUM_THREADS=1 nice python benchmarks/png16.py --io /tmp/old_io.py --repeat 2
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import struct
import tempfile
import time
import zlib
from pathlib import Path

import cv2
import numpy as np


def paeth_png(path: Path) -> np.ndarray:
    """Write the test image to ``path`` and return it as ``(H, W, 3)`` uint16 RGB."""
    from skimage import data

    rgb = data.astronaut().astype(np.uint16) * 257
    rgb ^= np.random.default_rng(0).integers(0, 256, size=rgb.shape, dtype=np.uint16)  # random low byte
    ok, buf = cv2.imencode(".png", rgb[..., ::-1], [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_PAETH])
    assert ok
    path.write_bytes(buf.tobytes())
    return rgb


def row_filters(png: bytes) -> set[int]:
    """The set of row filter types of a non-interlaced 16-bit RGB PNG."""
    w, h = struct.unpack(">II", png[16:24])
    pos, idat = 8, b""
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos : pos + 8])
        idat += png[pos + 8 : pos + 8 + length] if kind == b"IDAT" else b""
        pos += 12 + length
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + w * 6)
    return set(raw[:, 0].tolist())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--io", type=Path, default=None, help="a zsir/io.py file to time instead of the installed one")
    args = p.parse_args()
    if args.io is None:
        from zsir.io import read_image
    else:
        spec = importlib.util.spec_from_file_location("io_under_test", args.io)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        read_image = module.read_image
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "paeth16.png"
        rgb = paeth_png(path)
        assert row_filters(path.read_bytes()) == {4}, "not every row is Paeth-filtered"
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            x = read_image(path)
            times.append(time.perf_counter() - t)
        got = np.round(x[0].permute(1, 2, 0).double().numpy() * 65535)
        assert np.abs(got - rgb).max() <= 1, "decoded values differ"  # float32 result: within one 16-bit step
    median = statistics.median(times)
    print(f"{args.io or 'zsir.io'}: 512x512 RGB 16-bit Paeth PNG, median {median:.4f} s over {args.repeat} reads")


if __name__ == "__main__":
    main()
