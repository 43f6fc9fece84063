"""zsir.io: formats, channel and alpha policies, 16-bit PNGs, .npy checks and atomic writes."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from zsir import io as zio


@pytest.fixture
def astro() -> np.ndarray:
    skdata = pytest.importorskip("skimage.data")
    return np.asarray(Image.fromarray(skdata.astronaut()).resize((40, 32), Image.LANCZOS))


def test_png_round_trip_and_pillow_filters(tmp_path, astro):
    Image.fromarray(astro).save(tmp_path / "a.png")  # Pillow picks Sub/Up/Paeth row filters per row
    x = zio.read_image(tmp_path / "a.png")
    assert x.shape == (1, 3, 32, 40) and x.dtype == torch.float32
    np.testing.assert_array_equal((x[0].permute(1, 2, 0) * 255).round().byte().numpy(), astro)
    zio.write_image(tmp_path / "b.png", x)
    torch.testing.assert_close(zio.read_image(tmp_path / "b.png"), x, rtol=0, atol=0)


@pytest.mark.parametrize("channels", [1, 3])
def test_16bit_png_round_trip(tmp_path, channels):
    x = torch.rand(1, channels, 9, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    zio.write_image(tmp_path / "x.png", x, bit_depth=16)
    y = zio.read_image(tmp_path / "x.png", dtype=torch.float64)
    assert y.shape == x.shape
    assert float((y - x).abs().max()) <= 0.5 / 65535 + 1e-12  # 16-bit precision, not 8-bit


def _paeth_png16(arr: np.ndarray) -> bytes:
    """A 16-bit PNG of an ``(H, W, C)`` uint16 array with every row Paeth-filtered, written from the PNG
    specification (section 9.4) independently of zsir and its PNG library."""
    h, w, c = arr.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    bpp = 2 * c
    raw = np.ascontiguousarray(arr.astype(">u2")).view(np.uint8).reshape(h, w * bpp).astype(np.int32)
    a = np.pad(raw, ((0, 0), (bpp, 0)))[:, :-bpp]  # left
    b = np.pad(raw, ((1, 0), (0, 0)))[:-1]  # above
    cc = np.pad(raw, ((1, 0), (bpp, 0)))[:-1, :-bpp]  # upper left
    p = a + b - cc
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - cc)
    pred = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, cc))
    rows = np.concatenate([np.full((h, 1), 4), (raw - pred) % 256], axis=1).astype(np.uint8)

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    idat = zlib.compress(rows.tobytes())
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_paeth_filtered_16bit_png_decodes_exactly(tmp_path, channels):
    arr = np.random.default_rng(channels).integers(0, 65536, size=(17, 13, channels), dtype=np.uint16)
    arr[..., -1] = 65535 if channels in (2, 4) else arr[..., -1]  # opaque alpha: no compositing
    (tmp_path / "p.png").write_bytes(_paeth_png16(arr))
    x = zio.read_image(tmp_path / "p.png", dtype=torch.float64)
    colour = arr[..., : 1 if channels <= 2 else 3]
    np.testing.assert_array_equal(np.round(x[0].permute(1, 2, 0).numpy() * 65535).astype(np.uint16), colour)


def test_16bit_grey_from_pillow_scaled_by_65535(tmp_path):
    arr = np.array([[0, 65535], [32768, 1000]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "g.png")
    assert Image.open(tmp_path / "g.png").mode == "I;16"
    x = zio.read_image(tmp_path / "g.png", dtype=torch.float64)
    torch.testing.assert_close(x[0, 0], torch.from_numpy(arr / 65535.0))


def test_grey_keeps_one_channel_and_expands_on_request(tmp_path, astro):
    Image.fromarray(astro).convert("L").save(tmp_path / "g.jpg")
    assert zio.read_image(tmp_path / "g.jpg").shape == (1, 1, 32, 40)
    rgb = zio.read_image(tmp_path / "g.jpg", channels=3)
    assert rgb.shape == (1, 3, 32, 40) and torch.equal(rgb[:, 0], rgb[:, 2])
    assert zio.read_image(tmp_path / "g.jpg", channels=1).shape == (1, 1, 32, 40)


def test_rgba_composited_on_white_with_warning(tmp_path):
    arr = np.zeros((4, 4, 4), dtype=np.uint8)
    arr[..., 0] = 255
    arr[:2, :, 3] = 255  # top half opaque red, bottom half fully transparent
    Image.fromarray(arr, "RGBA").save(tmp_path / "a.png")
    with pytest.warns(UserWarning, match="white"):
        x = zio.read_image(tmp_path / "a.png")
    assert x.shape == (1, 3, 4, 4)
    torch.testing.assert_close(x[0, :, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(x[0, :, 3, 0], torch.ones(3))


def test_palette_and_bmp_tiff(tmp_path, astro):
    Image.fromarray(astro).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "p.png")
    assert zio.read_image(tmp_path / "p.png").shape == (1, 3, 32, 40)
    for suffix in (".bmp", ".tif"):
        zio.write_image(tmp_path / f"x{suffix}", torch.full((1, 3, 5, 6), 0.5))
        torch.testing.assert_close(zio.read_image(tmp_path / f"x{suffix}"), torch.full((1, 3, 5, 6), 128 / 255))


def test_missing_and_unsupported(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        zio.read_image(tmp_path / "nope.png")
    (tmp_path / "x.gif").write_bytes(b"GIF89a")
    with pytest.raises(ValueError, match=r"x\.gif.*supported: \.png"):
        zio.read_image(tmp_path / "x.gif")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png"):
        zio.read_image(tmp_path / "broken.png")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_npy_nan_inf_rejected(tmp_path, bad):
    a = np.full((4, 4, 3), 0.5, dtype=np.float32)
    a[1, 2, 0] = bad
    np.save(tmp_path / "a.npy", a)
    with pytest.raises(ValueError, match="NaN or inf"):
        zio.read_image(tmp_path / "a.npy")


def test_npy_layouts(tmp_path):
    chw = np.random.default_rng(0).random((3, 5, 6))
    np.save(tmp_path / "chw.npy", chw)
    np.save(tmp_path / "hwc.npy", chw.transpose(1, 2, 0))
    np.save(tmp_path / "u16.npy", (chw[0] * 65535).astype(np.uint16))
    a, b = zio.read_image(tmp_path / "chw.npy"), zio.read_image(tmp_path / "hwc.npy")
    assert a.shape == (1, 3, 5, 6) and torch.equal(a, b)
    assert zio.read_image(tmp_path / "u16.npy").shape == (1, 1, 5, 6)
    np.save(tmp_path / "bad.npy", np.zeros((2, 5, 6, 7)))
    with pytest.raises(ValueError, match=r"\(2, 5, 6, 7\)"):
        zio.read_image(tmp_path / "bad.npy")


def test_atomic_write_failure_leaves_old_file_and_no_temp(tmp_path):
    target = tmp_path / "out.bin"
    zio.atomic_write(target, b"old")

    def broken(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        zio.atomic_write(target, broken)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]
    with pytest.raises(FileExistsError, match="out.bin"):
        zio.atomic_write(target, b"new", overwrite=False)
    with pytest.raises(ValueError, match="16-bit"):
        zio.write_image(tmp_path / "x.jpg", torch.zeros(1, 3, 2, 2), bit_depth=16)


def test_atomic_write_gives_outputs_the_usual_permissions(tmp_path):
    import os
    import stat

    from zsir.io import atomic_write

    mask = os.umask(0o022)
    try:
        out = atomic_write(tmp_path / "a.bin", b"x")
    finally:
        os.umask(mask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644


def test_centre_crop_keeps_the_middle_and_the_multiple():
    from zsir.io import centre_crop

    x = torch.arange(35.0).reshape(1, 1, 5, 7)
    out = centre_crop(x, 5, multiple=2)  # min(5, 5, 7) = 5 -> 4 (a multiple of 2); top (5-4)//2 = 0, left 3//2 = 1
    assert out.shape == (1, 1, 4, 4) and out.is_contiguous()
    assert out[0, 0, 0].tolist() == [1.0, 2.0, 3.0, 4.0] and out[0, 0, 3, 0] == 22.0
    assert centre_crop(x, 100).shape == (1, 1, 5, 5)
