"""Output sets of ``zsir restore``: naming, publishing, the completeness check and the resume plan.

**A set.** Input ``NAME.*`` gives ``NAME.png`` (the restoration), ``NAME_grid.png``, ``NAME_s<k>.png`` (one per
sample when ``--num-samples K > 1``) and ``NAME.json``, the completion mark.

**Publishing** (:func:`publish`): every file of the set is first written in full to a hidden temporary file
``.FILE.<random>.tmp`` beside its destination and fsync'ed; only then is an older ``NAME.json`` removed, the
image files renamed into place (:func:`os.replace`, atomic per file) and ``NAME.json`` renamed last. A set is
**complete** (:func:`is_complete`) when ``NAME.json`` parses, names the zsir version and every file of the set
exists.

**What a kill can leave.** A SIGKILL or power loss while the files are written leaves hidden ``.NAME*.tmp`` files
(or ``.zsir-write-probe.*.tmp`` during the write probe) and no new visible file; one during the few renames at
the end (microseconds) leaves some of the set's images without ``NAME.json``: an incomplete set. Never a
truncated visible file, and never a ``NAME.json`` whose images are missing or older. ``--resume`` deletes both
kinds of leftovers and restores those inputs again.

**Resume** (:func:`plan`): ``NAME.json`` records the parameters that determine the output (:func:`request`); a
complete set made with other parameters is not silently kept: ``--resume`` refuses and names the differences,
``--overwrite`` redoes every set.

Everything here works per set, so callers may split the planned sets between processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zsir import io as zio
from zsir.cli.common import UsageError, jsonable

__all__ = [
    "set_files",
    "request",
    "is_complete",
    "differences",
    "clear_temporaries",
    "Plan",
    "plan",
    "publish",
    "estimate_bytes",
    "check_writable",
]

PROBE_BYTES = 1 << 20  # written once to the output folder before any restoration
PROBE_NAME = "zsir-write-probe"  # staged as .zsir-write-probe.<random>.tmp and deleted at once


def set_files(outdir: Path, stem: str, num_samples: int) -> dict[str, Path]:
    """The files of input ``stem``'s output set, the JSON (the completion mark) last."""
    out = {"restored": outdir / f"{stem}.png", "grid": outdir / f"{stem}_grid.png"}
    out.update({f"sample{k}": outdir / f"{stem}_s{k}.png" for k in range(num_samples if num_samples > 1 else 0)})
    out["json"] = outdir / f"{stem}.json"
    return out


def request(args, sampler: str, task: str) -> dict[str, Any]:
    """The parameters that determine a restoration (what ``--resume`` compares), as JSON values.

    ``sampler`` is the registry name and ``task`` the canonical task name. Device, batch size and progress do not
    enter: they change speed, not the request.
    """
    req = {
        "mode": "simulate" if args.simulate else "measured",
        "task": task,
        "sampler": sampler,
        "prior": args.prior,
        "prior_config": args.prior_config,
        "sigma_y": args.sigma_y,
        "pd": args.pd,
        "steps": args.steps,
        "preset": args.preset,
        "params": dict(sorted(dict(args.param).items())),
        "seed": args.seed,
        "num_samples": args.num_samples,
        "bit_depth": args.bit_depth,
        "dtype": args.dtype,
    }
    return json.loads(json.dumps(jsonable(req)))


def _record(files: dict[str, Path]) -> dict[str, Any] | None:
    try:
        rec = json.loads(files["json"].read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and "zsir_version" in rec else None


def is_complete(files: dict[str, Path]) -> bool:
    """``True`` when the set's JSON is valid and every file of the set exists."""
    return _record(files) is not None and all(p.is_file() for p in files.values())


def differences(recorded: dict[str, Any] | None, wanted: dict[str, Any]) -> list[str]:
    """Human-readable differences between a set's recorded request and the wanted one (empty when equal)."""
    if not isinstance(recorded, dict):
        return ["made by a zsir that did not record its parameters"]
    missing = "<not recorded>"
    return [
        f"{key} {recorded.get(key, missing)!r} (now {wanted[key]!r})"
        for key in wanted
        if recorded.get(key, missing) != wanted[key]
    ]


def clear_temporaries(files: dict[str, Path]) -> list[Path]:
    """Delete the set's leftover temporary files (``.FILE.*.tmp``, left by a kill); returns what was removed."""
    removed = []
    for p in files.values():
        for tmp in p.parent.glob(zio.temp_glob(p.name)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


@dataclass
class Plan:
    """The sets to restore (``todo``: input path and its files) and how many inputs are already complete."""

    todo: list[tuple[Path, dict[str, Path]]] = field(default_factory=list)
    complete: int = 0
    cleared: int = 0


def _check_names(inputs: list[Path], outdir: Path, num_samples: int) -> list[dict[str, Path]]:
    owner: dict[Path, Path] = {}
    sets = []
    for path in inputs:
        files = set_files(outdir, path.stem, num_samples)
        for p in files.values():
            if p in owner:
                raise UsageError(f"inputs {owner[p]} and {path} would both write {p.name}; rename one")
            if p.resolve() == path.resolve():
                raise UsageError(f"{path}: the output would replace the input; choose another -o folder")
            owner[p] = path
        sets.append(files)
    return sets


def plan(inputs: list[Path], outdir: Path, wanted: dict[str, Any], *, resume: bool, overwrite: bool) -> Plan:
    """Decide which inputs to restore; nothing is written except the removal of leftovers under ``resume``.

    * neither flag: every input is restored; existing outputs are a usage error (nothing is replaced);
    * ``overwrite``: every input is restored and its set replaced;
    * ``resume``: complete sets made with ``wanted`` are kept, complete sets made with other parameters are a
      usage error naming the differences, incomplete sets are deleted (their visible files and temporary files)
      and restored again.

    Raises:
        UsageError: both flags, clashing output names, existing outputs, or a resume with other parameters.
    """
    if resume and overwrite:
        raise UsageError(
            "--resume and --overwrite contradict each other: --resume keeps finished sets, --overwrite redoes "
            "them; pass one"
        )
    out = Plan()
    existing: list[Path] = []
    changed: list[str] = []
    for path, files in zip(inputs, _check_names(inputs, outdir, wanted["num_samples"]), strict=True):
        if resume:
            out.cleared += len(clear_temporaries(files))
            if is_complete(files):
                diff = differences(_record(files).get("request"), wanted)
                if not diff:
                    out.complete += 1
                    continue
                changed.append(f"{files['json'].name}: {', '.join(diff)}")
                continue  # kept as it is: the plan is refused below
            for p in files.values():  # an incomplete set: its files are leftovers of a killed run
                p.unlink(missing_ok=True)
        elif overwrite:
            out.cleared += len(clear_temporaries(files))
        else:
            existing += [p for p in files.values() if p.exists()]
        out.todo.append((path, files))
    if resume:
        for tmp in outdir.glob(zio.temp_glob(PROBE_NAME)):  # a kill during the write probe
            tmp.unlink(missing_ok=True)
            out.cleared += 1
    if changed:
        more = f" (and {len(changed) - 3} more)" if len(changed) > 3 else ""
        raise UsageError(
            f"--resume: {len(changed)} finished output set(s) in {outdir} were made with other parameters: "
            f"{'; '.join(changed[:3])}{more}. Rerun with the same parameters, pass --overwrite to redo them, or "
            "choose another -o folder"
        )
    if existing:
        more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
        shown = ", ".join(str(p) for p in existing[:3]) + more
        raise UsageError(
            f"output file(s) already exist: {shown}; pass --overwrite to replace them or --resume to "
            "skip finished inputs"
        )
    return out


def publish(files: dict[str, Path], contents: dict[str, bytes]) -> None:
    """Publish one set: stage every file, then rename them into place with the JSON last (see the module doc).

    If anything fails before the JSON is in place, the staged files and the files of this set already renamed
    are removed, so the set is absent rather than partial.
    """
    if set(contents) != set(files):
        raise ValueError(f"contents: expected the files {sorted(files)}, got {sorted(contents)}")
    staged: dict[str, Path] = {}
    published: list[Path] = []
    try:
        for key, path in files.items():
            staged[key] = zio.stage_file(path, contents[key])
        old = _record(files)
        files["json"].unlink(missing_ok=True)  # from here on the set is incomplete until the new JSON lands
        stale = set((old or {}).get("outputs", {}).values()) - {p.name for p in files.values()}
        for name in stale:  # e.g. sample files of an earlier run with more samples
            (files["json"].parent / Path(name).name).unlink(missing_ok=True)
        for key, path in files.items():
            os.replace(staged[key], path)
            del staged[key]
            published.append(path)
    except BaseException:
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)
        if files["json"] not in published:
            for p in published:
                p.unlink(missing_ok=True)
        raise


def estimate_bytes(inputs: list[Path], factor: int, num_samples: int, bit_depth: int) -> int:
    """Upper bound of the bytes the sets of ``inputs`` take (uncompressed pixels; PNG stores less).

    Sizes come from the file headers (nothing is decoded); an unreadable input counts 0 (it fails later anyway).
    """
    import numpy as np
    from PIL import Image

    total = 0
    for path in inputs:
        try:
            if path.suffix.lower() == ".npy":
                shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
                pixels = int(np.prod(shape)) // (3 if 3 in shape else 1)
            else:
                with Image.open(path) as img:
                    pixels = img.size[0] * img.size[1]
        except (OSError, ValueError, SyntaxError):
            continue
        restored = pixels * factor**2 * 3 * bit_depth // 8
        total += restored * (1 + (num_samples if num_samples > 1 else 0)) + 3 * pixels * factor**2 * 3 * 4
    return total


def check_writable(outdir: Path, need_bytes: int = 0) -> None:
    """Prove before any restoration that ``outdir`` can take the outputs: a probe file, and free space.

    Folders created for the probe are removed again while they are empty (the outputs create them when they are
    published), so a later usage error leaves no trace; a folder another process has meanwhile written into (a
    second rank of a distributed run) is left as it is.

    Raises:
        UsageError: the folder cannot be created or written, or has less than ``need_bytes`` free.
    """
    created = [p for p in [outdir, *outdir.parents] if not p.exists()]
    try:
        outdir.mkdir(parents=True, exist_ok=True)
        zio.stage_file(outdir / PROBE_NAME, bytes(PROBE_BYTES)).unlink(missing_ok=True)
        free = shutil.disk_usage(outdir).free
    except OSError as err:
        raise UsageError(
            f"-o {outdir}: cannot write to the output folder ({type(err).__name__}: {err}); nothing was restored"
        ) from None
    finally:
        for p in created:  # deepest first; rmdir never removes a folder that is not empty
            with contextlib.suppress(OSError):
                p.rmdir()
    if free < need_bytes:
        raise UsageError(
            f"-o {outdir}: the outputs need about {need_bytes / 2**20:.0f} MiB but only {free / 2**20:.0f} MiB are "
            "free; free some space or choose another folder (nothing was restored)"
        )
