r"""Task strings (``--task`` of the CLI and ``zsir bench``) -> operators with their default kernels and masks.

============================ ==================================================================================
task                         operator (``H x W`` = size of the clean / restored image)
============================ ==================================================================================
``sr2``, ``sr4``, ``sr8``    :class:`~zsir.operators.BicubicSR` (DDRM ``sr_bicubic``), y is ``H/f x W/f``
``sr2-avg`` ... ``sr8-avg``  :class:`~zsir.operators.AveragePoolSR` (DDRM/CM4IR ``sr{f}``, block average)
``deblur-gauss``             :class:`~zsir.operators.SeparableBlur`, Gaussian std 3 px, 61 taps (DPS/RDMD's
                             kernel), zero boundary
``deblur-gauss-circular``    :class:`~zsir.operators.CircularBlur`, the same Gaussian as a 61x61 kernel
                             (:func:`~zsir.operators.gaussian_kernel_2d`), periodic boundary
``deblur-uniform``           :class:`~zsir.operators.SeparableBlur`, 9-tap box (DDRM ``deblur_uni``)
``deblur-motion``            :class:`~zsir.operators.CircularBlur`, a 61x61 :func:`~zsir.operators.motion_kernel`
                             (intensity 0.5) drawn from the seed, periodic boundary
``deblur-kernel:FILE``       your kernel (``.npy``, ``.txt``/``.csv``, or a grey image): 1-D (odd length) ->
                             SeparableBlur with it on both axes, 2-D -> CircularBlur; normalised to sum 1
``inpaint-box``              :class:`~zsir.operators.Inpainting`, a missing centred box of half the side
                             (DPS's 128x128 box on 256x256)
``inpaint-random[:P]``       ``P`` (default 0.8) of the pixels missing, shared by the channels, drawn from the seed
``inpaint-mask:FILE``        a mask image (white = observed) or ``.npy`` (non-zero = observed) of size ``H x W``
``colorize``                 :class:`~zsir.operators.Colorization` (grey = channel mean), y has 1 channel
``denoise``                  :class:`~zsir.operators.Identity`
============================ ==================================================================================

Random operators (``deblur-motion``, ``inpaint-random``) only make sense when zsir simulates the measurement; a
real degraded photo needs the actual kernel or mask (``deblur-kernel:FILE``, ``inpaint-mask:FILE``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from zsir import operators as ops
from zsir.registry import suggest

__all__ = ["Task", "parse_task", "TASK_NAMES", "load_kernel"]

TASK_NAMES = [
    "sr2", "sr4", "sr8", "sr2-avg", "sr4-avg", "sr8-avg", "deblur-gauss", "deblur-gauss-circular", "deblur-uniform",
    "deblur-motion",
    "deblur-kernel:FILE", "inpaint-box", "inpaint-random", "inpaint-random:P", "inpaint-mask:FILE", "colorize",
    "denoise",
]  # fmt: skip
_FILE_TASKS = ("deblur-kernel", "inpaint-mask")


@dataclass(frozen=True)
class Task:
    """A parsed task: builds the operator for a given clean-image size.

    Attributes:
        name: the task string as parsed (``"sr4"``, ``"deblur-kernel:k.npy"``).
        kind: ``"sr"``, ``"deblur"``, ``"inpaint"``, ``"colorize"`` or ``"denoise"``.
        factor: the SR scale (1 for the other tasks).
        random: True when the operator is drawn from the seed (simulation only).
        kernel: the loaded kernel of ``deblur-kernel:FILE`` (normalised, float64).
        mask: the loaded mask of ``inpaint-mask:FILE`` (bool, True = observed).
    """

    name: str
    kind: str
    factor: int = 1
    random: bool = False
    fraction: float = 0.8
    path: Path | None = None
    kernel: Tensor | None = field(default=None, repr=False, compare=False)
    mask: Tensor | None = field(default=None, repr=False, compare=False)

    def x_size(self, y_size: tuple[int, int]) -> tuple[int, int]:
        """Size ``(H, W)`` of the restored image for a measurement of size ``y_size``."""
        return (y_size[0] * self.factor, y_size[1] * self.factor)

    def check_size(self, size: tuple[int, int]) -> None:
        """Raise ValueError when a clean image of ``size`` cannot be measured by this task."""
        h, w = size
        if h % self.factor or w % self.factor:
            raise ValueError(
                f"image size {h}x{w} is not divisible by the {self.name} factor {self.factor}; crop it to "
                f"{h - h % self.factor}x{w - w % self.factor} (zsir does not crop silently, so metrics stay honest)"
            )

    def operator(self, size: tuple[int, int], seed: int = 0) -> ops.LinearOperator:
        """The operator for clean images of ``size = (H, W)``; random tasks draw from ``seed``."""
        self.check_size(size)
        h, w = size
        gen = torch.Generator().manual_seed(int(seed))
        if self.kind == "sr":
            return (ops.AveragePoolSR if self.name.endswith("-avg") else ops.BicubicSR)(self.factor)
        if self.name == "deblur-gauss":
            return ops.SeparableBlur(ops.gaussian_kernel(61, 3.0))
        if self.name == "deblur-gauss-circular":
            return ops.CircularBlur(ops.gaussian_kernel_2d(61, 3.0))
        if self.name == "deblur-uniform":
            return ops.SeparableBlur(ops.uniform_kernel(9))
        if self.name == "deblur-motion":
            return ops.CircularBlur(ops.motion_kernel(61, 0.5, generator=gen))
        if self.kind == "deblur":
            return ops.SeparableBlur(self.kernel) if self.kernel.dim() == 1 else ops.CircularBlur(self.kernel)
        if self.name == "inpaint-box":
            return ops.Inpainting(ops.box_mask((h, w), (h // 4, w // 4, h // 2, w // 2)))
        if self.random:
            return ops.Inpainting(ops.random_mask((h, w), self.fraction, generator=gen))
        if self.kind == "inpaint":
            if tuple(self.mask.shape[-2:]) != (h, w):
                raise ValueError(
                    f"mask file {self.path}: its size {tuple(self.mask.shape[-2:])} does not match the image size "
                    f"{(h, w)}"
                )
            return ops.Inpainting(self.mask)
        if self.kind == "colorize":
            return ops.Colorization()
        return ops.Identity()


def load_kernel(path: str | Path) -> Tensor:
    """Read a blur kernel: ``.npy``, text (``.txt``/``.csv``, whitespace or comma separated) or a grey image.

    Returns a float64 kernel normalised to sum 1: 1-D (odd length) or 2-D.

    Raises:
        FileNotFoundError: no such file.
        ValueError: wrong shape (not 1-D/2-D, even 1-D length), negative/NaN/inf taps or a zero sum.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"kernel file {path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            k = np.load(path, allow_pickle=False)
        elif suffix in (".txt", ".csv"):
            text = path.read_text()
            k = np.loadtxt(path, delimiter="," if "," in text else None, ndmin=1)
        else:
            from zsir.io import read_image

            k = read_image(path, channels=1, dtype=torch.float64)[0, 0].numpy()
    except (OSError, ValueError) as err:
        raise ValueError(f"kernel file {path}: cannot read it ({err})") from err
    k = np.squeeze(np.asarray(k, dtype=np.float64))
    if k.ndim not in (1, 2) or k.size < 1:
        raise ValueError(f"kernel file {path}: expected a 1-D or 2-D kernel, got shape {np.shape(k)}")
    if k.ndim == 1 and k.size % 2 == 0:
        raise ValueError(f"kernel file {path}: a 1-D kernel needs an odd length, got {k.size}")
    if not np.isfinite(k).all() or (k < 0).any() or k.sum() <= 0:
        raise ValueError(f"kernel file {path}: expected finite non-negative taps with a positive sum")
    return torch.from_numpy(k / k.sum())


def parse_task(spec: str) -> Task:
    """Parse a task string (see the module table) into a :class:`Task`; kernel and mask files are read here.

    Raises:
        ValueError: unknown task (with the closest known name), bad parameter, or a bad kernel/mask file.
        FileNotFoundError: a kernel or mask file does not exist.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"task: expected a task name such as 'sr4', got {spec!r}")
    spec = spec.strip()
    base, _, arg = spec.partition(":")
    base = base.lower()
    if base in _FILE_TASKS:
        if not arg:
            raise ValueError(f"task: {base} needs a file, e.g. '{base}:path/to/file'")
        path = Path(arg).expanduser()
        if base == "deblur-kernel":
            return Task(spec, "deblur", path=path, kernel=load_kernel(path))
        mask = ops.mask_from_image(path)
        if mask.dim() == 3 and mask.shape[0] not in (1, 3):
            raise ValueError(
                f"mask file {path}: expected shape (H, W) or (C, H, W) with C in {{1, 3}}, got {tuple(mask.shape)}"
            )
        if bool(mask.all()):
            raise ValueError(f"mask file {path}: no pixel is missing (white / non-zero = observed)")
        return Task(spec, "inpaint", path=path, mask=mask)
    if base == "inpaint-random":
        try:
            fraction = float(arg) if arg else 0.8
        except ValueError:
            fraction = -1.0
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"task: inpaint-random:P needs a missing fraction P in (0, 1), got {arg!r}")
        return Task(f"inpaint-random:{fraction:g}", "inpaint", random=True, fraction=fraction)
    if arg:
        raise ValueError(f"task: {base!r} takes no ':' argument, got {spec!r}")
    if base in ("sr2", "sr4", "sr8", "sr2-avg", "sr4-avg", "sr8-avg"):
        return Task(base, "sr", factor=int(base[2]))
    simple = {"deblur-gauss": "deblur", "deblur-gauss-circular": "deblur", "deblur-uniform": "deblur",
              "deblur-motion": "deblur",
              "inpaint-box": "inpaint", "colorize": "colorize", "denoise": "denoise"}  # fmt: skip
    if base in simple:
        return Task(base, simple[base], random=base == "deblur-motion")
    known = [n.split(":")[0] for n in TASK_NAMES]
    raise ValueError(f"unknown task {spec!r}; known tasks: {', '.join(TASK_NAMES)}.{suggest(base, known)}")
