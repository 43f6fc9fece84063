"""zsir tune: search a sampler's hyperparameters on a validation folder and write a preset file.

Example:

    zsir tune --dataset val/ --task sr4 --sigma-y 0.05 --prior builtin --sampler rdmd --trials 40 -o presets.json
    zsir restore photos/ --task sr4 --sampler rdmd --presets presets.json -o out/

The search uses the first images of the folder (sorted by name; --files NAME ... keeps only those files) and scores
the best setting and the defaults on the last --holdout images, which it never saw. --files builtin-validation
selects the built-in prior's 10 validation images of CBSD68 (the files its last training stages left out):

    zsir tune --dataset cbsd68/ --files builtin-validation --task sr4 --sampler cm4ir -o presets.json

Numbers are searched over a range, choices and flags (RDMD's output, CM4IR's truncation, ...) over the values in the
"search" column of the hyperparameter tables; --param KEY=VALUE holds any of them (steps too) fixed. With
--nfe-budget, steps is searched up to the most the drawn options allow, and a trial over the budget is pruned
unscored. --storage (default: OUTPUT.db beside the preset file) keeps the study: rerunning the same command resumes
it. Ctrl-C stops the search and still writes the best trial so far.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from zsir.cli.common import (
    UsageError,
    device_from,
    float_in,
    load_prior,
    param,
    positive_int,
    sampler_class,
    task_from,
)


def add_parser(sub) -> None:
    t = sub.add_parser(
        "tune",
        help="tune a sampler's hyperparameters on a validation folder (Optuna) and write a preset file",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    t.add_argument("--dataset", required=True, type=Path, help="folder of clean validation images")
    t.add_argument("--task", required=True, help="task string, e.g. sr4, deblur-gauss, inpaint-random")
    t.add_argument("--sampler", required=True, help="rdmd, cm4ir, ddrm, ddnm, ddnm+, diffpir, dps, pnp")
    t.add_argument("--sigma-y", type=float_in(0, 1), default=0.05, help="noise std, [0, 1] units (default: 0.05)")
    t.add_argument("--prior", default="builtin", help="prior name or path, as zsir restore (default: builtin)")
    t.add_argument("--trials", type=positive_int, default=40, help="trials of the study in total (default: 40)")
    t.add_argument("--objective", choices=["psnr", "ssim", "haarpsi", "lpips"], default="psnr", help="(default: psnr)")
    t.add_argument("--nfe-budget", type=positive_int, default=None, help="most network calls per restoration")
    t.add_argument("--size", type=positive_int, default=128, help="centre crop side of the images (default: 128)")
    t.add_argument("--limit", type=positive_int, default=None, help="use only the first N images")
    t.add_argument(
        "--files",
        nargs="+",
        default=None,
        metavar="NAME",
        help="use only these files of --dataset (names, not paths); builtin-validation: the built-in prior's "
        "validation images of CBSD68",
    )
    t.add_argument("--holdout", type=positive_int, default=None, help="held-out images (default: a third)")
    t.add_argument(
        "--param",
        type=param,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="hold a hyperparameter fixed, e.g. output=d or steps=30 (repeatable)",
    )
    t.add_argument("--name", default=None, help="preset name in the file (default: SAMPLER-TASK-SIGMA)")
    t.add_argument(
        "--seed", type=int, default=0, help="seed of the search, the measurements and the samplers (default: 0)"
    )
    t.add_argument("--storage", type=Path, default=None, help="SQLite file of the study (default: OUTPUT.db)")
    t.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="(default: auto)")
    t.add_argument("-o", "--output", required=True, type=Path, help="preset file to write (entries are merged)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=run)


def run(args) -> int:
    from zsir.tune import dataset_files, tune

    cls = sampler_class(args.sampler)
    task = task_from(args.task)
    if not args.dataset.is_dir():
        raise UsageError(f"--dataset: {args.dataset} is not a folder")
    try:
        dataset_files(args.dataset, args.files)
    except ValueError as err:
        raise UsageError(f"--{err}") from None  # "--dataset: ..." or "--files: ..."
    fixed = dict(args.param)
    try:
        cls.check_params(fixed)
    except ValueError as err:
        raise UsageError(f"--param: {err}") from None
    device = device_from(args.device)
    prior = load_prior(args.prior, device, "float32")
    storage = args.storage or args.output.with_suffix(args.output.suffix + ".db")
    try:
        res = tune(
            args.dataset,
            task.name,
            cls.name,
            sigma_y=args.sigma_y,
            prior=prior,
            prior_name=args.prior,
            trials=args.trials,
            objective=args.objective,
            nfe_budget=args.nfe_budget,
            size=args.size,
            holdout=args.holdout,
            limit=args.limit,
            files=args.files,
            fixed=fixed,
            seed=args.seed,
            storage=storage,
            output=args.output,
            preset_name=args.name,
            command="zsir " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["tune"] else None,
            device=device,
            progress=not args.no_progress,
        )
    except ValueError as err:
        raise UsageError(str(err)) from None
    budget = f" ({res.over_budget} over the NFE budget)" if res.over_budget else ""
    print(
        f"zsir tune: {res.completed} trial(s) completed, {res.pruned} pruned{budget}, {res.failed} failed; study in "
        f"{storage}"
    )
    if res.entry is None:
        print("zsir tune: no trial completed; nothing written", file=sys.stderr)
        return 130 if res.interrupted else 1
    print(
        f"zsir tune: held-out {args.objective}: tuned {res.heldout_score:.4f}, defaults {res.default_heldout_score:.4f}"
        f"; preset {res.entry.name!r} written to {args.output}: {res.best_params}"
    )
    return 130 if res.interrupted else 0
