"""Training images from folders and tar files, and a random-patch sampler.

Images are kept in memory as ``uint8`` tensors ``(3, H, W)``. Tar files (``.tar``, ``.tar.gz``) are read member
by member with :mod:`tarfile` (nothing is extracted to disk); ``split`` selects members whose path contains
that folder name (``train`` picks ``train/<class>/*.jpg`` of the CIFAR-10 archive).
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

__all__ = ["IMAGE_SUFFIXES", "VALIDATION_CBSD68", "load_images", "PatchSampler"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

#: The held-out validation images of the built-in prior: every 7th file of CBSD68 in sorted order (10 images).
#: Training skips them (``load_images(..., exclude=VALIDATION_CBSD68)``, the default of ``zsir train-prior``).
VALIDATION_CBSD68 = (
    "101085.png",
    "108070.png",
    "130026.png",
    "148089.png",
    "167083.png",
    "196073.png",
    "220075.png",
    "241048.png",
    "295087.png",
    "304074.png",
)


def _to_tensor(img: Image.Image) -> Tensor:
    return torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def _is_tar(path: Path) -> bool:
    return path.is_file() and (path.name.endswith((".tar", ".tar.gz", ".tgz")) or tarfile.is_tarfile(path))


def load_images(
    source: str | Path,
    split: str | None = None,
    max_images: int | None = None,
    exclude: Sequence[str] = (),
) -> list[Tensor]:
    """Load RGB images as ``uint8`` ``(3, H, W)`` tensors from an image folder (recursive) or a tar file.

    Args:
        source: folder, single image file, or ``.tar`` / ``.tar.gz`` archive.
        split: keep only files with this folder name in their path (e.g. ``"train"``); ``None`` keeps all.
        max_images: stop after this many images (in sorted / archive order).
        exclude: file names (without folders) to skip, e.g. :data:`VALIDATION_CBSD68`.

    Raises:
        ValueError: ``source`` does not exist or holds no images.
    """
    path = Path(source)
    if not path.exists():
        raise ValueError(f"source: {str(source)!r} does not exist (expected an image folder or a tar file)")
    images: list[Tensor] = []
    skip = set(exclude)

    def wanted(name: str) -> bool:
        parts = Path(name).parts
        return name.lower().endswith(IMAGE_SUFFIXES) and (split is None or split in parts) and parts[-1] not in skip

    if _is_tar(path):
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                if max_images is not None and len(images) >= max_images:
                    break
                if member.isfile() and wanted(member.name):
                    data = tar.extractfile(member).read()
                    images.append(_to_tensor(Image.open(io.BytesIO(data))))
    else:
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for p in files:
            if max_images is not None and len(images) >= max_images:
                break
            if wanted(str(p.relative_to(path.parent if path.is_file() else path))):
                with Image.open(p) as im:
                    images.append(_to_tensor(im))
    if not images:
        raise ValueError(f"source: no images found in {str(source)!r} (split={split!r}; suffixes {IMAGE_SUFFIXES})")
    return images


class PatchSampler:
    """Random square patches with flips and transposes, one source per batch.

    Each batch comes from one source, drawn with probability proportional to ``weights``. A source whose images
    are smaller than ``patch_size`` uses patches of its smallest side and a batch scaled up so that the number
    of pixels per batch stays ``batch_size * patch_size ** 2`` (CIFAR 32x32 images next to 64x64 crops).

    Args:
        sources: lists of ``uint8`` images (from :func:`load_images`).
        weights: sampling weight of every source (default: equal).
        patch_size: side of the crops.
        batch_size: crops per batch at ``patch_size``.
        generator: the only source of randomness.
    """

    def __init__(
        self,
        sources: Sequence[Sequence[Tensor]],
        patch_size: int,
        batch_size: int,
        weights: Sequence[float] | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        if not sources or any(len(s) == 0 for s in sources):
            raise ValueError("sources: expected one or more non-empty lists of images")
        w = torch.ones(len(sources)) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        if w.numel() != len(sources) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"weights: expected {len(sources)} non-negative values, got {list(map(float, w))}")
        self.sources = [list(s) for s in sources]
        self.weights = w / w.sum()
        self.patch_size = int(patch_size)
        self.batch_size = int(batch_size)
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.sizes = []
        for s in self.sources:
            p = min(self.patch_size, min(min(im.shape[-2:]) for im in s))
            self.sizes.append((p, max(1, round(self.batch_size * (self.patch_size / p) ** 2))))

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """A batch ``(B, 3, p, p)`` float32 in [0, 1], drawn with ``generator`` (default: the sampler's own)."""
        g = self.generator if generator is None else generator

        def randint(high: int) -> int:
            return int(torch.randint(high, (1,), generator=g))

        src = int(torch.multinomial(self.weights, 1, generator=g))
        p, b = self.sizes[src]
        images = self.sources[src]
        out = torch.empty(b, 3, p, p, dtype=torch.uint8)
        for i in range(b):
            im = images[randint(len(images))]
            y0 = randint(im.shape[-2] - p + 1)
            x0 = randint(im.shape[-1] - p + 1)
            patch = im[:, y0 : y0 + p, x0 : x0 + p]
            if randint(2):
                patch = patch.flip(-1)
            if randint(2):
                patch = patch.flip(-2)
            if randint(2):
                patch = patch.transpose(-1, -2)
            out[i] = patch
        return out.float() / 255.0
