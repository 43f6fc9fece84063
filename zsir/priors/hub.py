"""Downloads, caches and checkpoint files for the prior loaders.

* Hugging Face Hub files go to the Hugging Face cache (``huggingface_hub.hf_hub_download``); ``HF_HUB_OFFLINE=1``
  is honoured even when it is set after ``huggingface_hub`` was imported.
* Plain URLs (e.g. OpenAI's ``openaipublic`` blobs) go to :func:`cache_dir` (``$ZSIR_CACHE``, else
  ``$XDG_CACHE_HOME/zsir``, else ``~/.cache/zsir``), downloaded to a ``.part`` file and renamed when complete.
* Without network, :class:`PriorDownloadError` says which file is needed, where it comes from and where to put
  it. A truncated or corrupt file, or a state dict that does not fit the network, raises
  :class:`CheckpointError` naming the file and the first mismatching keys.
"""

from __future__ import annotations

import os
import pickle
import shutil
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = [
    "PriorDownloadError",
    "CheckpointError",
    "cache_dir",
    "is_offline",
    "hub_file",
    "url_file",
    "checkpoint_problem",
    "check_checkpoint",
    "read_state_dict",
    "check_state_dict",
]


class PriorDownloadError(RuntimeError):
    """A prior's weights are not available locally and cannot be downloaded."""


class CheckpointError(RuntimeError):
    """A checkpoint file is corrupt or its state dict does not fit the network."""


def cache_dir() -> Path:
    """zsir's cache folder for URL downloads and converted checkpoints (read from the environment each call)."""
    if os.environ.get("ZSIR_CACHE"):
        return Path(os.environ["ZSIR_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "zsir"


def is_offline() -> bool:
    """``True`` when ``HF_HUB_OFFLINE`` is set (checked at call time) or huggingface_hub was imported offline."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
        return True
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_file(repo_id: str, filename: str, *, revision: str | None = None) -> Path:
    """Local path of ``filename`` in Hub repo ``repo_id``, downloading it into the Hugging Face cache if needed.

    Raises:
        FileNotFoundError: the repository has no such file (the caller may try an alternative name); offline, when
            the Hugging Face cache recorded that it does not exist (a ``.no_exist`` entry from an earlier lookup).
        PriorDownloadError: the file is not cached and cannot be downloaded (offline or no network).
    """
    from huggingface_hub import _CACHED_NO_EXIST, constants, hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    offline = is_offline()
    if offline and try_to_load_from_cache(repo_id, filename, revision=revision) is _CACHED_NO_EXIST:
        raise FileNotFoundError(f"{filename!r} is not in Hub repository {repo_id!r} (per the Hugging Face cache)")
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, local_files_only=offline))
    except LocalEntryNotFoundError as err:
        raise _hub_error(repo_id, filename, offline, constants.HF_HUB_CACHE, err) from err
    except (EntryNotFoundError, RepositoryNotFoundError) as err:
        raise FileNotFoundError(
            f"{filename!r} is not in Hub repository {repo_id!r} (or the repository does not exist or is private): {err}"
        ) from err
    except OSError as err:  # network and HTTP errors (huggingface_hub's HTTP errors are OSErrors)
        raise _hub_error(repo_id, filename, offline, constants.HF_HUB_CACHE, err) from err


def _hub_error(repo_id: str, filename: str, offline: bool, cache: str, err: Exception) -> PriorDownloadError:
    why = "HF_HUB_OFFLINE is set" if offline else f"the download failed ({type(err).__name__}: {err})"
    return PriorDownloadError(
        f"{filename!r} from Hugging Face Hub repository {repo_id!r} "
        f"(https://huggingface.co/{repo_id}/blob/main/{filename}) is needed but is not in the cache and {why}. "
        f"To load it offline, run once with network access (it is stored under {cache}), or download the "
        f"repository to a folder yourself (`hf download {repo_id} --local-dir DIR`) and pass that folder's path "
        "instead of the name."
    )


def url_file(url: str, filename: str | None = None) -> Path:
    """Local path of the file at ``url``, downloaded once into ``cache_dir() / "downloads"``.

    Raises:
        PriorDownloadError: not cached and offline, or the download failed.
    """
    name = filename or url.rstrip("/").split("/")[-1].split("?")[0]
    dest = cache_dir() / "downloads" / name
    if dest.is_file():
        return dest
    if is_offline():
        raise _url_error(url, dest, "HF_HUB_OFFLINE is set")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as f:
            shutil.copyfileobj(response, f, length=1 << 20)
        part.replace(dest)
    except OSError as err:
        part.unlink(missing_ok=True)
        raise _url_error(url, dest, f"the download failed ({type(err).__name__}: {err})") from err
    return dest


def _url_error(url: str, dest: Path, why: str) -> PriorDownloadError:
    return PriorDownloadError(
        f"{dest.name!r} is needed but is not cached and {why}. It comes from {url}. To load it offline, download "
        f"it on a machine with network access and put it at {dest} (or set ZSIR_CACHE to a folder holding "
        f"downloads/{dest.name}), or pass the file's path instead of the name."
    )


_LEGACY_TORCH = b"\x80"  # torch.save before PyTorch 1.6: a pickle stream (protocol 2+ opcode PROTO)


def checkpoint_problem(path: str | Path) -> str | None:
    """Why the weights file at ``path`` cannot be read, or ``None`` when its structure is sound.

    Cheap structural checks, reading only headers (no tensor data): a ``.safetensors`` file must hold its JSON
    header and every byte its tensors' ``data_offsets`` point to; any other file must be a complete zip archive
    (PyTorch >= 1.6 ``torch.save``, diffusers ``.bin``) or start like a legacy torch pickle. Catches empty,
    truncated (an interrupted download or copy) and non-checkpoint files before a loader misreads them.
    """
    import json
    import struct
    import zipfile

    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        return "the file is empty"
    with open(path, "rb") as f:
        head = f.read(8)
        if path.suffix == ".safetensors":
            if len(head) < 8:
                return f"truncated: {size} bytes, shorter than a safetensors header"
            (n,) = struct.unpack("<Q", head)
            if 8 + n > size:
                return f"truncated or not a safetensors file: its header claims {n} bytes but the file has {size}"
            try:
                header = json.loads(f.read(n))
                end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
            except (ValueError, TypeError, KeyError, IndexError):
                return "not a safetensors file (its header is not valid safetensors JSON)"
            if 8 + n + end > size:
                return f"truncated: {size} bytes of the {8 + n + end} its header describes"
            return None
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                last = max((i.header_offset + i.compress_size for i in z.infolist()), default=0)
        except (zipfile.BadZipFile, OSError) as err:
            return f"a damaged zip archive ({err})"
        return None if last <= size else f"truncated: {size} bytes, its zip directory needs {last}"
    if head[:4] == b"PK\x03\x04":
        return f"truncated: a zip archive (PyTorch checkpoint) without its end ({size} bytes)"
    if head[:1] == _LEGACY_TORCH:
        return None
    return f"not a checkpoint: neither safetensors, a zip-format torch file nor a torch pickle (starts {head[:8]!r})"


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a ``.safetensors`` file or a torch file (``torch.load(weights_only=True)``) as a flat state dict.

    Torch files holding ``{"state_dict": ...}``, ``{"model": ...}`` or ``{"ema": ...}`` are unwrapped.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: the file is truncated, corrupt, or holds no tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r}: no such file")
    check_checkpoint(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = next((line.strip() for line in str(err).splitlines() if "Unsupported global" in line), "")
        found = found.split(" was not", 1)[0].replace("WeightsUnpickler error: ", "")
        raise CheckpointError(
            f"checkpoint {str(path)!r} holds Python objects besides tensors ({found or 'not a plain state dict'}); "
            "zsir only loads plain state dicts, never arbitrary pickled code. Save the weights alone "
            "(torch.save(model.state_dict(), path)) or convert them to .safetensors."
        ) from None
    except Exception as err:
        text = (str(err).splitlines() or [""])[0]
        raise CheckpointError(
            f"cannot read checkpoint {str(path)!r} ({path.stat().st_size} bytes): {type(err).__name__}"
            f"{'' if 'weights_only' in text else ': ' + text}. The file is probably corrupt: delete it and "
            "download it again."
        ) from None
    for key in ("state_dict", "model", "ema"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping) or not any(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"checkpoint {str(path)!r} holds no state dict of tensors (got {type(state).__name__})")
    return {k: v for k, v in state.items() if isinstance(v, Tensor)}


def check_checkpoint(path: str | Path) -> None:
    """Raise :class:`CheckpointError` naming the file when :func:`checkpoint_problem` finds it unreadable."""
    problem = checkpoint_problem(path)
    if problem is not None:
        raise CheckpointError(
            f"cannot read checkpoint {str(path)!r}: {problem}. The file is truncated or corrupt (an interrupted "
            "download or copy?): delete it and download or copy it again."
        )


def check_state_dict(state: Mapping[str, Tensor], model: nn.Module, source: str, *, show: int = 5) -> None:
    """Raise :class:`CheckpointError` unless ``state`` has exactly ``model``'s keys and shapes.

    The message names ``source`` (the file) and the first ``show`` missing, unexpected and mis-shaped keys.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if not (missing or unexpected or shapes):
        return
    parts = [
        f"{label} ({len(keys)}): {', '.join(keys[:show])}{', ...' if len(keys) > show else ''}"
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes))
        if keys
    ]
    raise CheckpointError(
        f"checkpoint {source!r} does not fit the network ({'; '.join(parts)}). Is it the right file for this "
        "config / model?"
    )
