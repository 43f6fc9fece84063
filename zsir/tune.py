r"""Hyperparameter search for a sampler on a validation folder, and preset files (``zsir tune``).

:func:`tune` searches a sampler's declared search space (:meth:`~zsir.samplers.base.Sampler.search_space`: the
:class:`~zsir.samplers.params.Param` entries with a ``search`` range or search values, plus ``steps``) with Optuna's
TPE sampler (seeded) and median pruning: every trial restores the *search* images one by one and reports the
running mean of the objective after each, so a trial that is clearly worse than the median of earlier trials stops
after a few images. Numbers are drawn from their range, choices and flags (RDMD's ``output``, CM4IR's
``truncation``, ...) from their declared values. The best setting and the sampler's defaults are then scored on the
*held-out* images, which the search never saw, and written as a preset to a JSON file that :func:`load_presets`,
``zsir.solve(..., preset=...)`` and ``zsir restore --presets FILE`` read.

**NFE budget.** Some options change the number of network calls (RDMD's ``output`` and ``truncate``, CM4IR's
``truncation`` and ``iN``), so ``steps`` is drawn last, from a range computed for the options the trial drew:
``[max(2, hi // 4), hi]`` with ``hi`` the most steps whose :meth:`~zsir.samplers.base.Sampler.total_nfe` fits
``nfe_budget``. A trial that does not fit all the same (no step count fits its options, or ``steps`` held fixed) is
pruned before it restores anything, with the reason in its ``pruned`` user attribute.

**Images.** ``files`` restricts the folder to named files; ``"builtin-validation"`` stands for the built-in
prior's validation images (``zsir.models.data.VALIDATION_CBSD68``, the CBSD68 files its last training stages
left out), so ``zsir tune --dataset cbsd68/ --files builtin-validation`` tunes on images that prior did not train
on in those stages.

Every trial sees the same measurements (noise and random operators drawn from ``seed``) and the same sampler seed,
so trials differ only by their hyperparameters. The study lives in an SQLite file (``storage``), so an
interrupted search resumes where it stopped; a trial that raises is recorded as failed and the search goes on;
Ctrl-C ends the search and still scores and writes the best trial so far.

Preset file format (``zsir_presets: 1``)::

    {"zsir_presets": 1,
     "presets": {"NAME": {"sampler": "rdmd", "task": "sr4", "sigma_y": 0.05, "prior": "builtin",
                          "params": {"steps": 40, "lambda_": 12.5, ...}, "description": "...",
                          "tuning": {"objective": "psnr", "heldout_score": ..., "default_heldout_score": ...,
                                     "search_images": [...], "heldout_images": [...], "files": [...],
                                     "nfe": ..., "nfe_budget": ..., "trials": ..., "command": "..."}}}}

A file holds presets for several samplers and tasks; :func:`write_preset` adds or replaces one entry.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from zsir import io as zio
from zsir import metrics as zmetrics
from zsir.models.data import VALIDATION_CBSD68
from zsir.samplers.base import Preset

__all__ = [
    "PresetEntry",
    "TuneResult",
    "OBJECTIVES",
    "FILE_SETS",
    "dataset_files",
    "load_presets",
    "find_preset",
    "write_preset",
    "tune",
]

FORMAT = 1

# name -> (metric(x, ref) per image in [0, 1], direction)
OBJECTIVES: dict[str, tuple[Callable[[Tensor, Tensor], Tensor], str]] = {
    "psnr": (zmetrics.psnr, "maximize"),
    "ssim": (zmetrics.ssim, "maximize"),
    "haarpsi": (zmetrics.haarpsi, "maximize"),
    "lpips": (zmetrics.lpips, "minimize"),
}

#: Names that stand for a set of files in ``files`` (``zsir tune --files``): ``"builtin-validation"`` is the
#: built-in prior's validation images of CBSD68.
FILE_SETS: dict[str, tuple[str, ...]] = {"builtin-validation": VALIDATION_CBSD68}


# ----- preset files ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PresetEntry:
    """One preset of a preset file: the sampler and setting it is for, and its :class:`Preset`.

    ``preset.params`` may include ``steps``; pass ``preset`` to :func:`zsir.solve` as ``preset=entry.preset``.
    """

    name: str
    sampler: str
    task: str
    sigma_y: float
    prior: str
    preset: Preset
    tuning: dict[str, Any] = field(default_factory=dict)


def load_presets(path: str | Path) -> dict[str, PresetEntry]:
    """Read a preset file written by :func:`write_preset` (``zsir tune -o``); every entry is checked against its
    sampler's schema.

    Raises:
        FileNotFoundError: no such file. ValueError: not a zsir preset file, or an entry that does not validate.
    """
    from zsir.samplers import SAMPLERS

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"presets: {path}: no such file")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"presets: {path}: not a JSON preset file ({err})") from None
    if not isinstance(data, dict) or data.get("zsir_presets") != FORMAT or not isinstance(data.get("presets"), dict):
        raise ValueError(f"presets: {path}: not a zsir preset file (expected 'zsir_presets': {FORMAT} and 'presets')")
    out = {}
    for name, e in data["presets"].items():
        try:
            cls = SAMPLERS.get(e["sampler"])
            params = cls.check_params(dict(e["params"]))
            out[name] = PresetEntry(
                name,
                cls.name,
                str(e["task"]),
                float(e["sigma_y"]),
                str(e["prior"]),
                Preset(str(e.get("description", name)), params),
                dict(e.get("tuning", {})),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"presets: {path}: entry {name!r} is invalid ({err})") from None
    return out


def find_preset(
    entries: dict[str, PresetEntry],
    sampler: str,
    *,
    name: str | None = None,
    task: str | None = None,
    sigma_y: float | None = None,
    prior: str | None = None,
) -> PresetEntry:
    """The entry called ``name``, or else the one entry for ``sampler`` (and ``task``, ``sigma_y``, ``prior`` where
    given). Raises ValueError naming the entries when there is none or more than one."""
    if name is not None:
        if name not in entries:
            raise ValueError(f"preset: no preset {name!r} in the file; it has {sorted(entries)}")
        entry = entries[name]
        if entry.sampler != sampler:
            raise ValueError(f"preset: {name!r} is for sampler {entry.sampler!r}, not {sampler!r}")
        return entry
    match = [
        e
        for e in entries.values()
        if e.sampler == sampler
        and (task is None or e.task == task)
        and (sigma_y is None or math.isclose(e.sigma_y, sigma_y, abs_tol=1e-9))
        and (prior is None or e.prior == prior)
    ]
    if len(match) != 1:
        what = f"sampler {sampler!r}, task {task!r}, sigma_y {sigma_y}, prior {prior!r}"
        have = ", ".join(f"{e.name} ({e.sampler}, {e.task}, {e.sigma_y:g}, {e.prior})" for e in entries.values())
        count = "no preset" if not match else f"{len(match)} presets"
        raise ValueError(f"preset: {count} for {what}; the file has: {have or 'nothing'} (name one with --preset)")
    return match[0]


def write_preset(path: str | Path, entry: PresetEntry) -> None:
    """Add (or replace) ``entry`` in the preset file ``path`` (created if missing), atomically."""
    path = Path(path)
    data = {"zsir_presets": FORMAT, "presets": {}}
    if path.is_file():
        old = json.loads(path.read_text())
        if old.get("zsir_presets") == FORMAT:
            data["presets"] = old.get("presets", {})
    data["presets"][entry.name] = {
        "sampler": entry.sampler,
        "task": entry.task,
        "sigma_y": entry.sigma_y,
        "prior": entry.prior,
        "params": entry.preset.params,
        "description": entry.preset.description,
        "tuning": entry.tuning,
    }
    zio.write_text(path, json.dumps(data, indent=2) + "\n")


# ----- the search ------------------------------------------------------------------------------------------------
@dataclass
class TuneResult:
    """What :func:`tune` found. Scores are means of the objective over the held-out images."""

    entry: PresetEntry | None
    best_params: dict[str, Any]
    heldout_score: float | None
    default_heldout_score: float | None
    completed: int
    failed: int
    pruned: int
    interrupted: bool
    over_budget: int = 0  # of the pruned trials, those whose options exceed the NFE budget (never scored)


@dataclass
class _Problem:
    name: str
    x: Tensor
    op: Any
    y: Tensor


def dataset_files(folder: str | Path, files: Sequence[str] | None = None) -> list[Path]:
    """The images of ``folder`` sorted by name, or only the named ``files`` among them (file names, not paths; a key
    of :data:`FILE_SETS` such as ``"builtin-validation"`` stands for its files).

    Raises:
        ValueError: ``folder`` holds no images, or a named file is not one of them (the message names it).
    """
    folder = Path(folder)
    found = {p.name: p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in zio.SUPPORTED_SUFFIXES}
    if not found:
        raise ValueError(f"dataset: {folder} has no images ({', '.join(zio.SUPPORTED_SUFFIXES)})")
    if files is None:
        return [found[n] for n in sorted(found)]
    files = [files] if isinstance(files, str) else list(files)
    names = {n: f for f in files for n in FILE_SETS.get(f, (f,))}  # name -> what named it
    if not names:
        raise ValueError("files: expected at least one file name")
    missing = [n if names[n] == n else f"{n} (from {names[n]!r})" for n in names if n not in found]
    if missing:
        have = ", ".join(sorted(found)[:5]) + (", ..." if len(found) > 5 else "")
        raise ValueError(
            f"files: not among the images of {folder}: {', '.join(missing)}; it has {len(found)} image(s): {have}"
        )
    return [found[n] for n in sorted(names)]


def _read_images(paths: list[Path], size: int, factor: int, channels: int) -> list[tuple[str, Tensor]]:
    return [(p.name, zio.centre_crop(zio.read_image(p, channels=channels), size, factor)) for p in paths]


def _problems(images, task, sigma_y: float, seed: int, device) -> list[_Problem]:
    out = []
    for i, (name, x) in enumerate(images):
        x = x.to(device)
        op = task.operator(tuple(x.shape[-2:]), seed=seed + i).to(device)
        y = op.A(x)
        g = torch.Generator().manual_seed(seed + 1000 + i)
        y = y + sigma_y * torch.randn(y.shape, generator=g, dtype=y.dtype).to(device)
        out.append(_Problem(name, x, op, y))
    return out


def _score(problem: _Problem, sampler: str, prior, params: dict, sigma_y: float, objective: str, seed: int) -> float:
    import zsir

    params = dict(params)
    steps = params.pop("steps", None)
    out = zsir.solve(
        problem.y,
        problem.op,
        sampler=sampler,
        prior=prior,
        sigma_y=sigma_y or None,
        steps=steps,
        generator=seed,
        progress=False,
        **params,
    )
    value = float(OBJECTIVES[objective][0](out, problem.x).mean())
    if not math.isfinite(value):
        raise FloatingPointError(f"objective {objective} is {value}")
    return value


def _steps_range(cls, prior, nfe_budget: int | None, params: dict[str, Any] | None = None) -> tuple[int, int] | None:
    """Range of ``steps`` searched: ``[max(lo, hi // 4), hi]`` with ``hi`` the default steps, or the most steps
    whose NFE fits ``nfe_budget`` with the hyperparameters ``params`` (they can change the NFE: e.g. RDMD's
    ``truncate="stochastic"`` keeps the deterministic calls of truncated iterations); ``None`` when not even ``lo``
    steps fit."""
    lo = 2  # quad schedules (DiffPIR, RDMD) need two levels; one step is no search worth making
    hi = cls.default_steps
    if nfe_budget is not None:
        fits = [
            s
            for s in range(lo, 2 * cls.default_steps + 1)
            if cls(prior, steps=s, progress=False, **(params or {})).total_nfe() <= nfe_budget
        ]
        if not fits:
            return None
        hi = max(fits)
    return max(lo, hi // 4), hi


def tune(
    dataset: str | Path,
    task: str,
    sampler: str,
    *,
    sigma_y: float = 0.05,
    prior: Any = "builtin",
    prior_name: str | None = None,
    trials: int = 40,
    objective: str = "psnr",
    nfe_budget: int | None = None,
    size: int = 128,
    holdout: int | None = None,
    limit: int | None = None,
    files: Sequence[str] | None = None,
    fixed: dict[str, Any] | None = None,
    seed: int = 0,
    storage: str | Path | None = None,
    output: str | Path | None = None,
    preset_name: str | None = None,
    command: str | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> TuneResult:
    r"""Search ``sampler``'s hyperparameters for ``task`` at noise ``sigma_y`` on the images of ``dataset``.

    Args:
        dataset: a folder of clean images; each is centre-cropped to ``size`` (a multiple of the task's factor).
        task: a task string (``"sr4"``, ``"deblur-gauss"``, ``"inpaint-random"``, ...; :mod:`zsir.tasks`).
        sampler: the sampler's registry name.
        sigma_y: measurement noise std in **[0, 1] image units**.
        prior: a :class:`~zsir.priors.Prior` or a name for :func:`zsir.priors.load_prior`; ``prior_name`` is the name
            recorded in the preset (default: ``prior`` when it is a string).
        trials: number of trials of the study in total (a resumed study runs only the missing ones).
        objective: ``"psnr"``, ``"ssim"``, ``"haarpsi"`` (maximised) or ``"lpips"`` (minimised).
        nfe_budget: most network calls per restoration: bounds the ``steps`` searched, for the options each trial
            drew; a trial that cannot fit is pruned unscored.
        holdout: images kept out of the search and used for the final scores (default: a third, at least 1);
            the first ``len - holdout`` images (sorted by name) are searched. ``limit``: use only the first images.
        files: use only these files of ``dataset`` (names; ``"builtin-validation"``: the built-in prior's
            validation images, :data:`FILE_SETS`); the search / held-out split applies to them.
        fixed: hyperparameters held fixed (not searched), ``steps`` included.
        seed: seeds the TPE sampler, the measurements and every restoration.
        storage: SQLite file of the study (resumable); ``None`` keeps it in memory.
        output: preset file to write (:func:`write_preset`); the entry is ``preset_name`` (default
            ``"{sampler}-{task}-{sigma_y}"``).
        command: the command line recorded in the preset.

    Returns:
        a :class:`TuneResult`; ``entry`` is ``None`` when no trial completed.
    """
    try:
        import optuna
    except ImportError:
        raise ImportError("zsir tune needs Optuna: pip install 'zsir[tune]' (or pip install optuna)") from None

    import zsir
    from zsir.samplers import SAMPLERS
    from zsir.tasks import parse_task

    if objective not in OBJECTIVES:
        raise ValueError(f"objective: expected one of {sorted(OBJECTIVES)}, got {objective!r}")
    if not isinstance(trials, int) or trials < 1:
        raise ValueError(f"trials: expected a positive integer, got {trials!r}")
    if not 0.0 <= float(sigma_y) <= 1.0:
        raise ValueError(f"sigma_y: expected a number in [0, 1] (image units), got {sigma_y}")
    cls = SAMPLERS.get(sampler)
    fixed = cls.check_params(dict(fixed or {}))
    parsed = parse_task(task)
    files = [files] if isinstance(files, str) else None if files is None else list(files)
    paths = dataset_files(dataset, files)[:limit]
    if isinstance(prior, str):
        prior_name = prior_name or prior
        prior = zsir.load_prior(prior)
    prior = prior.to(device)
    prior_name = prior_name or type(prior).__name__
    images = _read_images(paths, size, parsed.factor, prior.channels)
    n_hold = max(1, len(images) // 3) if holdout is None else int(holdout)
    if not 1 <= n_hold < len(images):
        raise ValueError(f"holdout: need at least one search and one held-out image; {len(images)} image(s), {n_hold}")
    search_imgs, held_imgs = images[: len(images) - n_hold], images[len(images) - n_hold :]
    space = {k: p for k, p in cls.search_space().items() if k not in fixed}
    defaults = {k: cls.hyperparameters[k] for k in space}
    search_steps = "steps" not in fixed
    steps_range = _steps_range(cls, prior, nfe_budget, defaults | fixed) if search_steps else None
    if search_steps and steps_range is None:
        raise ValueError(
            f"nfe_budget: {nfe_budget} network calls are fewer than {cls.name} needs at 2 steps with the default and "
            f"fixed hyperparameters"
        )
    search_set = _problems(search_imgs, parsed, sigma_y, seed, device)
    direction = OBJECTIVES[objective][1]

    def prune(trial: optuna.Trial, reason: str, over_budget: bool = False):
        trial.set_user_attr("pruned", reason)
        trial.set_user_attr("over_budget", over_budget)
        return optuna.TrialPruned(reason)

    def objective_fn(trial: optuna.Trial) -> float:
        params = {k: p.suggest(trial) for k, p in space.items()} | fixed
        if search_steps:  # drawn last: its range depends on the options drawn (they can change the NFE)
            rng = steps_range if nfe_budget is None else _steps_range(cls, prior, nfe_budget, params)
            if rng is None:
                raise prune(trial, f"over the NFE budget: these options need more than {nfe_budget} calls", True)
            params["steps"] = trial.suggest_int("steps", *rng)
        nfe = cls(prior, progress=False, **params).total_nfe()
        trial.set_user_attr("nfe", nfe)
        if nfe_budget is not None and nfe > nfe_budget:
            raise prune(trial, f"over the NFE budget: {nfe} network calls > {nfe_budget}", True)
        total = 0.0
        for i, pb in enumerate(search_set):
            total += _score(pb, cls.name, prior, params, sigma_y, objective, seed)
            trial.report(total / (i + 1), i)
            if trial.should_prune():
                raise prune(trial, f"below the median of earlier trials after {i + 1} image(s)")
        return total / len(search_set)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = f"{cls.name}|{parsed.name}|{sigma_y:g}|{prior_name}|{objective}|{size}|{seed}"
    study = optuna.create_study(
        study_name=name,
        storage=f"sqlite:///{Path(storage).resolve()}" if storage is not None else None,
        load_if_exists=True,
        direction=direction,
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0),
    )
    done = len(study.trials)
    search_names = [n for n, _ in search_imgs]
    if done == 0:
        study.set_user_attr("search_images", search_names)
        study.enqueue_trial(defaults | _default_steps(cls, steps_range))
    elif study.user_attrs.get("search_images", search_names) != search_names:
        raise ValueError(
            f"storage: the study {name!r} in {storage} searched other images ({study.user_attrs['search_images']}); "
            f"to search {search_names}, use another storage file"
        )
    interrupted = False
    try:
        if trials > done:
            study.optimize(objective_fn, n_trials=trials - done, catch=(Exception,), show_progress_bar=progress)
    except KeyboardInterrupt:
        interrupted = True
        print("zsir tune: interrupted; scoring the best trial so far", file=sys.stderr)
    states = [t.state for t in study.trials]
    count = lambda s: sum(x == s for x in states)  # noqa: E731
    completed = count(optuna.trial.TrialState.COMPLETE)
    over_budget = sum(bool(t.user_attrs.get("over_budget")) for t in study.trials)
    result = TuneResult(None, {}, None, None, completed, count(optuna.trial.TrialState.FAIL),
                        count(optuna.trial.TrialState.PRUNED), interrupted, over_budget)  # fmt: skip
    if completed == 0:
        return result
    best = dict(study.best_trial.params) | fixed
    held = _problems(held_imgs, parsed, sigma_y, seed + len(search_imgs), device)
    mean = lambda params: sum(_score(pb, cls.name, prior, params, sigma_y, objective, seed) for pb in held) / len(held)  # noqa: E731
    result.best_params = best
    result.heldout_score = mean(best)
    result.default_heldout_score = mean(fixed)
    entry_name = preset_name or f"{cls.name}-{parsed.name}-{sigma_y:g}"
    tuning = {
        "objective": objective,
        "heldout_score": result.heldout_score,
        "default_heldout_score": result.default_heldout_score,
        "search_score": study.best_value,
        "search_images": search_names,
        "heldout_images": [n for n, _ in held_imgs],
        "dataset": str(dataset),
        "files": files,
        "size": size,
        "nfe": study.best_trial.user_attrs.get("nfe"),
        "nfe_budget": nfe_budget,
        "trials": {
            "completed": completed,
            "pruned": result.pruned,
            "failed": result.failed,
            "over_budget": over_budget,
        },
        "seed": seed,
        "command": command,
    }
    desc = (
        f"tuned with zsir tune for prior {prior_name}, {parsed.name}, sigma_y {sigma_y:g}: held-out {objective} "
        f"{result.heldout_score:.4g} (defaults {result.default_heldout_score:.4g}) on {len(held)} image(s) of "
        f"{Path(dataset).name}"
    )
    result.entry = PresetEntry(
        entry_name, cls.name, parsed.name, float(sigma_y), prior_name, Preset(desc, best), tuning
    )
    if output is not None:
        write_preset(output, result.entry)
    return result


def _default_steps(cls, steps_range: tuple[int, int] | None) -> dict[str, int]:
    """The default ``steps`` (moved into the searched range) for the first (enqueued) trial; ``{}`` when ``steps``
    is held fixed."""
    if steps_range is None:
        return {}
    lo, hi = steps_range
    return {"steps": min(max(cls.default_steps, lo), hi)}
