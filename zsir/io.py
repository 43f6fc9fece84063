r"""Reading and writing images as ``(1, C, H, W)`` float tensors in [0, 1], and atomic file writes.

Reading (:func:`read_image`):

* PNG, JPEG, BMP, TIFF through Pillow, and ``.npy`` arrays. Other suffixes raise ValueError naming the file and
  :data:`SUPPORTED_SUFFIXES`; a missing file raises FileNotFoundError.
* **Greyscale** images come back with **one channel**. ``channels=3`` replicates the grey channel to RGB (what an
  RGB prior needs); ``channels=1`` turns RGB into grey by the channel mean (the
  :class:`~zsir.operators.Colorization` measurement).
* **Transparency** (RGBA, LA, palette with transparency) is **composited on white** (a UserWarning says so when
  some pixel is not fully opaque); the alpha channel is never returned.
* **16-bit** PNGs (grey, grey+alpha, RGB, RGBA with 16 bits per sample) are read at full precision through OpenCV
  (libpng; Pillow reduces 16-bit colour to 8 bits) and divided by 65535; 8-bit images are divided by 255. Palette
  images are expanded to RGB.
* ``.npy``: ``(H, W)``, ``(H, W, C)``, ``(C, H, W)`` or ``(1, C, H, W)`` with ``C`` in {1, 3}; ``uint8`` is
  divided by 255, ``uint16`` by 65535, float arrays are taken as they are ([0, 1] units; values slightly outside,
  e.g. an unclipped noisy measurement, are kept). NaN or inf raise ValueError.

Writing: :func:`write_image` (8-bit or 16-bit PNG, the latter through OpenCV; 8-bit JPEG/BMP/TIFF) and
:func:`write_text` go through :func:`atomic_write`: the bytes go to a temporary file in the destination folder, are
flushed and fsync'ed, and the file is renamed over the destination with :func:`os.replace`. A reader never sees a
partial file, and a failure (or Ctrl-C) while writing leaves no temporary file behind.
"""

from __future__ import annotations

import glob
import io
import math
import os
import struct
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "SUPPORTED_SUFFIXES",
    "read_image",
    "centre_crop",
    "write_image",
    "image_bytes",
    "atomic_write",
    "stage_file",
    "temp_glob",
    "write_text",
    "to_channels",
    "grid_image",
]

SUPPORTED_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".npy")
_PIL_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOUR_TYPES = (0, 2, 4, 6)  # grey, RGB, grey+alpha, RGBA (16-bit PNGs of these are decoded by OpenCV)


# ----- atomic writes ------------------------------------------------------------------------------------------
def atomic_write(path: str | Path, data: bytes | Callable[[BinaryIO], None], *, overwrite: bool = True) -> Path:
    """Write ``data`` (bytes, or a function writing to a binary file) to ``path`` atomically.

    The content goes to a hidden temporary file beside ``path`` (``.<name>.<random>.tmp``, see
    :func:`stage_file`), is fsync'ed, and replaces ``path`` in one :func:`os.replace`. On any exception (including
    KeyboardInterrupt) the temporary file is removed and ``path`` is left as it was.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path}: already exists (pass overwrite=True / --overwrite to replace it)")
    tmp = stage_file(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def stage_file(path: str | Path, data: bytes | Callable[[BinaryIO], None]) -> Path:
    """Write ``data`` to a new hidden temporary file ``.<name>.<random>.tmp`` beside ``path`` and return its path.

    The file is flushed, fsync'ed and given the usual permissions (umask), ready to be renamed onto ``path`` with
    :func:`os.replace`. On any exception it is removed again. Only a kill (SIGKILL, power loss) can leave such a
    file behind; :func:`temp_glob` matches them.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(data, (bytes, bytearray, memoryview)):
                f.write(data)
            else:
                data(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give outputs the usual permissions
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def temp_glob(name: str) -> str:
    """Glob pattern of the temporary files :func:`stage_file` creates for a destination file called ``name``."""
    return f".{glob.escape(name)}.*.tmp"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str, *, overwrite: bool = True) -> Path:
    """Atomically write UTF-8 text (see :func:`atomic_write`)."""
    return atomic_write(path, text.encode("utf-8"), overwrite=overwrite)


# ----- reading ------------------------------------------------------------------------------------------------
def _check_path(path: str | Path) -> Path:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise ValueError(
            f"{path}: unsupported image format {suffix or '(no suffix)'!r}; supported: {', '.join(SUPPORTED_SUFFIXES)}"
        )
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    return path


def _png_header(path: Path) -> tuple[int, int, int, int, int] | None:
    """(width, height, bit depth, colour type, interlace) of a PNG file, or None if it is not a PNG."""
    with open(path, "rb") as f:
        head = f.read(33)
    if len(head) < 33 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", head[16:29])
    return w, h, depth, ctype, interlace


def _decode_png16(path: Path, colour_type: int) -> np.ndarray:
    """Decode a 16-bit PNG with OpenCV (libpng) to an ``(H, W, C)`` uint16 array, channels in RGB(A) / grey(+alpha)
    order (Pillow reduces 16-bit colour to 8 bits)."""
    import cv2

    arr = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.dtype != np.uint16:
        raise ValueError(f"{path}: corrupt 16-bit PNG data")
    if arr.ndim == 2:
        return arr[..., None]
    if colour_type == 4:  # grey + alpha, expanded to BGRA by libpng
        return arr[..., [0, 3]]
    return arr[..., [2, 1, 0, 3][: arr.shape[-1]]]  # BGR(A) -> RGB(A)


def _composite_on_white(arr: np.ndarray, path: Path) -> np.ndarray:
    """``(H, W, C+1)`` float with alpha last -> ``(H, W, C)`` composited on white."""
    color, alpha = arr[..., :-1], arr[..., -1:]
    if (alpha < 1).any():
        warnings.warn(f"{path}: has transparent pixels; composited on a white background", UserWarning, stacklevel=3)
    return color * alpha + (1.0 - alpha)


def _read_pil(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    header = _png_header(path)
    if header is not None and header[2] == 16 and header[3] in _PNG_COLOUR_TYPES:
        arr = _decode_png16(path, header[3]).astype(np.float64) / 65535.0
    else:
        try:
            img = Image.open(path)
            img.load()
        except (UnidentifiedImageError, OSError, SyntaxError) as err:
            raise ValueError(f"{path}: cannot read the image ({err})") from err
        with img:
            if img.mode == "P":
                img = img.convert("RGBA" if "transparency" in img.info else "RGB")
            if img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
                arr = np.asarray(img, dtype=np.float64) / 65535.0
            elif img.mode in ("I", "F"):
                arr = np.asarray(img, dtype=np.float64)
                scale = 65535.0 if arr.max(initial=0) > 255 else 255.0
                arr = arr / scale
            elif img.mode in ("1", "L", "LA", "RGB", "RGBA"):
                arr = np.asarray(img.convert("L") if img.mode == "1" else img, dtype=np.float64) / 255.0
            else:  # CMYK, YCbCr, LAB, ...
                arr = np.asarray(img.convert("RGB"), dtype=np.float64) / 255.0
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.shape[-1] in (2, 4):
        arr = _composite_on_white(arr, path)
    return arr


def _read_npy(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise ValueError(f"{path}: cannot read the array ({err})") from err
    shape = arr.shape
    if arr.ndim == 4 and shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 2:
        arr = arr[..., None]
    elif arr.ndim == 3 and shape[-1] not in (1, 3) and arr.shape[0] in (1, 3):
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3) or min(arr.shape) < 1:
        raise ValueError(
            f"{path}: expected an array of shape (H, W), (H, W, C), (C, H, W) or (1, C, H, W) with C "
            f"in {{1, 3}}, got {shape}"
        )
    if arr.dtype == np.uint8:
        return arr.astype(np.float64) / 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float64) / 65535.0
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{path}: expected a float, uint8 or uint16 array, got dtype {arr.dtype}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{path}: contains NaN or inf values")
    return arr.astype(np.float64)


def to_channels(x: Tensor, channels: int | None) -> Tensor:
    """Adapt ``(B, C, H, W)`` to ``channels``: grey -> RGB by replication, RGB -> grey by the channel mean."""
    if channels is None or x.shape[1] == channels:
        return x
    if channels == 3 and x.shape[1] == 1:
        return x.expand(-1, 3, -1, -1).contiguous()
    if channels == 1 and x.shape[1] == 3:
        return x.mean(1, keepdim=True)
    raise ValueError(f"channels: cannot convert {x.shape[1]} channel(s) to {channels}; expected 1 or 3")


def centre_crop(x: Tensor, size: int, multiple: int = 1) -> Tensor:
    """The centre ``s x s`` crop of ``x`` ``(..., H, W)``, ``s = min(size, H, W)`` rounded down to a multiple of
    ``multiple`` (e.g. an SR factor), as a contiguous tensor."""
    H, W = x.shape[-2:]
    s = min(size, H, W)
    s -= s % multiple
    top, left = (H - s) // 2, (W - s) // 2
    return x[..., top : top + s, left : left + s].contiguous()


def read_image(path: str | Path, *, channels: int | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Read an image file into a ``(1, C, H, W)`` tensor in [0, 1] (see the module docstring for the policies).

    Args:
        path: a ``.png``, ``.jpg``/``.jpeg``, ``.bmp``, ``.tif``/``.tiff`` or ``.npy`` file.
        channels: ``None`` keeps the file's channels (1 for grey, 3 for colour); ``3`` replicates grey to RGB;
            ``1`` converts colour to grey (channel mean).
        dtype: floating dtype of the result.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: unsupported suffix, unreadable/corrupt file, bad ``.npy`` shape or dtype, NaN/inf values.
    """
    if channels not in (None, 1, 3):
        raise ValueError(f"channels: expected None, 1 or 3, got {channels!r}")
    path = _check_path(path)
    arr = _read_npy(path) if path.suffix.lower() == ".npy" else _read_pil(path)
    x = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))[None].to(dtype)
    return to_channels(x, channels)


# ----- writing ------------------------------------------------------------------------------------------------
def _encode_png16(arr: np.ndarray) -> bytes:
    """A 16-bit grey or RGB PNG of an ``(H, W, C)`` uint16 array, encoded by OpenCV (libpng)."""
    import cv2

    ok, buf = cv2.imencode(".png", arr[..., 0] if arr.shape[-1] == 1 else np.ascontiguousarray(arr[..., ::-1]))
    if not ok:
        raise ValueError(f"x: OpenCV could not encode a 16-bit PNG of shape {arr.shape}")
    return buf.tobytes()


def image_bytes(x: Tensor, suffix: str = ".png", bit_depth: int = 8) -> bytes:
    """Encode a ``(1, C, H, W)``, ``(C, H, W)`` or ``(H, W)`` image in [0, 1] (clamped, rounded) as file bytes."""
    from PIL import Image

    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth: expected 8 or 16, got {bit_depth!r}")
    suffix = suffix.lower()
    if suffix not in _PIL_FORMATS:
        raise ValueError(f"suffix: expected one of {', '.join(_PIL_FORMATS)}, got {suffix!r}")
    if bit_depth == 16 and suffix != ".png":
        raise ValueError(f"bit_depth: 16-bit output needs a .png file, got {suffix!r}")
    t = x.detach().to("cpu", torch.float64)
    if t.dim() == 4:
        if t.shape[0] != 1:
            raise ValueError(f"x: expected one image (1, C, H, W), got {tuple(t.shape)}")
        t = t[0]
    if t.dim() == 2:
        t = t[None]
    if t.dim() != 3 or t.shape[0] not in (1, 3):
        raise ValueError(
            f"x: expected shape (1, C, H, W), (C, H, W) or (H, W) with C in {{1, 3}}, got {tuple(x.shape)}"
        )
    if not torch.isfinite(t).all():
        raise ValueError("x: contains NaN or inf values")
    top = 65535 if bit_depth == 16 else 255
    arr = (t.clamp(0, 1) * top).round().permute(1, 2, 0).numpy()
    if bit_depth == 16:
        return _encode_png16(arr.astype(np.uint16))
    arr = arr.astype(np.uint8)
    img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
    buf = io.BytesIO()
    img.save(buf, format=_PIL_FORMATS[suffix], **({"quality": 95} if _PIL_FORMATS[suffix] == "JPEG" else {}))
    return buf.getvalue()


def write_image(path: str | Path, x: Tensor, bit_depth: int = 8, *, overwrite: bool = True) -> Path:
    """Atomically write an image in [0, 1] (clamped and rounded) to ``path``.

    Args:
        path: ``.png`` (8 or 16 bits per sample), or ``.jpg``/``.jpeg``/``.bmp``/``.tif``/``.tiff`` (8 bits).
        x: ``(1, C, H, W)``, ``(C, H, W)`` or ``(H, W)`` with ``C`` in {1, 3}.
        bit_depth: 8 or 16 (16 only for PNG).
        overwrite: replace an existing file (else FileExistsError).
    """
    path = Path(path)
    return atomic_write(path, image_bytes(x, path.suffix, bit_depth), overwrite=overwrite)


def grid_image(
    panels: Sequence[tuple[str, Tensor]], size: tuple[int, int], captions: Sequence[str] | None = None
) -> bytes:
    """PNG bytes of labelled panels side by side (the comparison grids of the CLI and the examples).

    Args:
        panels: ``(label, image)`` pairs; each image ``(C, H, W)`` in [0, 1] (clamped; grey shown as grey) is
            resized to ``size = (H, W)`` with nearest neighbour, so a low-resolution measurement shows its pixels.
            Panels narrower than 160 px are enlarged by an integer factor so that the labels fit.
        captions: optional text under each panel (e.g. metrics).

    Labels use Pillow's built-in scalable font (no font file needed) at a size that grows with the panel: about
    1/24 of its width, at least 12 px; a label too long for its panel is shrunk to fit, down to 8 px.
    """
    from PIL import Image, ImageDraw, ImageFont

    scale = max(1, math.ceil(160 / size[1]))
    h, w = size[0] * scale, size[1] * scale
    font_px = max(12, w // 24)
    texts = [label for label, _ in panels] + list(captions or [])
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    while font_px > 8 and max(probe.textlength(t, font=ImageFont.load_default(size=font_px)) for t in texts) > w:
        font_px -= 1
    font = ImageFont.load_default(size=font_px)
    label_h, pad = font_px + font_px // 3, max(4, font_px // 3)
    cap_h = label_h if captions else 0
    canvas = Image.new("RGB", (len(panels) * (w + pad) + pad, h + label_h + cap_h + 2 * pad), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (label, img) in enumerate(panels):
        x0 = pad + i * (w + pad)
        draw.text((x0, pad), label, fill="black", font=font)
        t = img.detach().float().cpu().clamp(0, 1).expand(3, -1, -1)
        arr = (t * 255).round().byte().permute(1, 2, 0).numpy()
        canvas.paste(Image.fromarray(arr).resize((w, h), Image.NEAREST), (x0, pad + label_h))
        if captions:
            draw.text((x0, pad + label_h + h + 1), captions[i], fill="black", font=font)
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()
