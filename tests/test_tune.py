"""``zsir tune`` / :func:`zsir.tune.tune`: search, held-out scoring, preset files, resume, failures, Ctrl-C."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import zsir
import zsir.tune as zt
from zsir.cli import main
from zsir.samplers import SAMPLERS
from zsir.tasks import parse_task

pytest.importorskip("optuna")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Five 16x16 crops of scikit-image photographs (real images that ship with a PyPI package)."""
    skdata = pytest.importorskip("skimage.data")
    d = tmp_path_factory.mktemp("val")
    photos = [skdata.astronaut(), skdata.coffee(), skdata.chelsea(), skdata.rocket(), skdata.astronaut()[200:]]
    for i, a in enumerate(photos):
        Image.fromarray(np.asarray(Image.fromarray(a).resize((16, 16), Image.LANCZOS))).save(d / f"im{i}.png")
    return d


def _tune(folder, tmp_path, **kw):
    args = dict(sampler="pnp", sigma_y=0.05, trials=3, size=16, seed=0, progress=False)
    args.update(kw)
    return zt.tune(folder, "denoise", **args)


def test_tune_writes_a_preset_scored_on_held_out_images(folder, tmp_path):
    out = tmp_path / "presets.json"
    res = _tune(folder, tmp_path, output=out)
    assert res.completed == 3 and res.failed == 0 and not res.interrupted
    entry = zt.load_presets(out)["pnp-denoise-0.05"]
    tuning = entry.tuning
    assert tuning["search_images"] == ["im0.png", "im1.png", "im2.png", "im3.png"]
    assert tuning["heldout_images"] == ["im4.png"]  # a third of 5, rounded down, at least 1: never searched
    assert entry.sampler == "pnp" and entry.task == "denoise" and entry.prior == "builtin"
    # the first trial is the defaults, so the best search score is at least theirs
    assert tuning["search_score"] >= _search_score(folder, {}) - 1e-6
    # the preset reproduces the recorded held-out score through zsir.solve(preset=...)
    x = zsir.io.read_image(folder / "im4.png", channels=3)
    op = zsir.operators.Identity()
    g = torch.Generator().manual_seed(0 + 4 + 1000)  # the held-out image's noise, as the search draws it
    y = x + 0.05 * torch.randn(x.shape, generator=g)
    out_img = zsir.solve(y, op, sampler="pnp", preset=entry.preset, sigma_y=0.05, generator=0, progress=False)
    assert float(zsir.metrics.psnr(out_img, x)) == pytest.approx(tuning["heldout_score"], abs=1e-4)


def _search_score(folder, params):
    prior, scores = zsir.load_prior("builtin"), []
    for i in range(4):
        x = zsir.io.read_image(folder / f"im{i}.png", channels=3)
        y = x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1000 + i))
        out = zsir.solve(
            y, zsir.operators.Identity(), sampler="pnp", prior=prior, sigma_y=0.05, generator=0, progress=False
        )
        scores.append(float(zsir.metrics.psnr(out, x)))
    return sum(scores) / len(scores)


def test_study_resumes_and_failing_trials_are_recorded(folder, tmp_path, monkeypatch):
    db = tmp_path / "s.db"
    assert _tune(folder, tmp_path, trials=2, storage=db).completed == 2
    real, calls = zt._score, []

    def flaky(pb, *a, **k):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("injected failure")
        return real(pb, *a, **k)

    monkeypatch.setattr(zt, "_score", flaky)
    res = _tune(folder, tmp_path, trials=4, storage=db)  # resumes: runs only the 2 missing trials
    assert (res.completed, res.failed) == (3, 1) and res.entry is not None


def test_ctrl_c_keeps_the_best_trial(folder, tmp_path, monkeypatch):
    real, calls = zt._score, []

    def interrupt_later(pb, *a, **k):
        calls.append(1)
        if len(calls) == 9:  # in the third trial (4 search images per trial)
            raise KeyboardInterrupt
        return real(pb, *a, **k)

    monkeypatch.setattr(zt, "_score", interrupt_later)
    out = tmp_path / "p.json"
    res = _tune(folder, tmp_path, trials=10, output=out)
    assert res.interrupted and res.completed == 2 and res.entry is not None
    assert "pnp-denoise-0.05" in zt.load_presets(out)


def test_nfe_budget_bounds_the_steps(folder, tmp_path):
    res = _tune(folder, tmp_path, sampler="rdmd", nfe_budget=6, trials=2, fixed={"tau": 0.5})
    steps = res.best_params["steps"]
    assert SAMPLERS.get("rdmd")(zsir.load_prior("builtin"), steps=steps, progress=False).total_nfe() <= 6
    with pytest.raises(ValueError, match="objective"):
        _tune(folder, tmp_path, objective="mse")


def test_nfe_budget_counts_with_the_fixed_hyperparameters():
    """RDMD's truncate="stochastic" keeps the deterministic calls of the iterations a limited prior truncates: the
    steps that fit a budget must be counted with it (they were counted at the defaults, and a preset tuned for 50
    network calls ran 86)."""
    from zsir.priors.denoiser import DenoiserPrior

    prior = DenoiserPrior(lambda x, s: x, sigma_max=0.6, name="limited")  # truncates RDMD's schedule
    cls, fixed = SAMPLERS.get("rdmd"), {"truncate": "stochastic", "output": "d"}
    _, hi = zt._steps_range(cls, prior, 20, cls.check_params(fixed))
    assert cls(prior, steps=hi, progress=False, **fixed).total_nfe() <= 20
    assert hi < zt._steps_range(cls, prior, 20)[1]


def test_cli_tune_then_restore_with_the_preset_file(folder, tmp_path, capsys):
    presets = tmp_path / "presets.json"
    rc = main(
        ["tune", "--dataset", str(folder), "--task", "denoise", "--sampler", "pnp", "--trials", "2", "--size", "16"]
        + ["-o", str(presets), "--no-progress"]
    )
    assert rc == 0, capsys.readouterr().err
    assert presets.with_suffix(".json.db").is_file()
    out = tmp_path / "out"
    rc = main(
        ["restore", str(folder / "im0.png"), "--task", "denoise", "--sampler", "pnp", "--simulate"]
        + ["--presets", str(presets), "-o", str(out), "--no-progress"]
    )
    assert rc == 0, capsys.readouterr().err
    rec = json.loads((out / "im0.json").read_text())
    assert rec["preset"] == "pnp-denoise-0.05" and rec["preset_file"] == str(presets)
    params = zt.load_presets(presets)["pnp-denoise-0.05"].preset.params
    assert rec["params"]["lambda_"] == pytest.approx(params["lambda_"]) and rec["steps"] == params.get("steps", 8)
    rc = main(
        ["restore", str(folder / "im0.png"), "--task", "sr4", "--sampler", "pnp", "--simulate"]
        + ["--presets", str(presets), "-o", str(out), "--no-progress"]
    )
    assert rc == 2 and "no preset for sampler 'pnp', task 'sr4'" in capsys.readouterr().err


def test_shipped_tuned_presets_are_labelled_and_leave_the_paper_presets_alone():
    from zsir.samplers import TUNED_PRESETS

    data = json.loads(TUNED_PRESETS.read_text())
    assert data["zsir_presets"] == 1 and data["presets"]
    for key, e in data["presets"].items():
        sampler, name = key.split("/")
        assert e["sampler"] == sampler and e["prior"] in ("builtin", "ffdnet")
        prefix = "tuned-" if e["prior"] == "builtin" else f"tuned-{e['prior']}-"  # tuned-sr4, tuned-ffdnet-sr4
        assert name.startswith(prefix) and parse_task(name[len(prefix) :]).name == e["task"]
        assert f"--prior {e['prior']}" in e["tuning"]["command"]
        t = e["tuning"]
        assert t["command"].startswith("zsir tune ") and f"--sampler {sampler}" in t["command"]
        assert t["heldout_images"] and not set(t["heldout_images"]) & set(t["search_images"])
        assert "tuned" in e["description"] and f"{t['heldout_score']:.4g}" in e["description"]
        assert t["heldout_score"] > t["default_heldout_score"]  # only presets that beat the defaults ship
        cls = SAMPLERS.get(sampler)
        assert cls.preset(name).params == cls.check_params(dict(e["params"]))
    # the published presets keep the official code's values (RDMD rdmd_sr.py defaults)
    sr = SAMPLERS.get("rdmd").preset("sr").params
    assert sr == {"lambda_": 20.0, "tau": 0.5, "zeta": 0.0, "steps": 100, "output": "z", "init": "bicubic"}


# ----- categorical options, the NFE budget per trial, choosing the images ---------------------------------------
def _trials(db):
    optuna = pytest.importorskip("optuna")
    return optuna.load_study(study_name=None, storage=f"sqlite:///{db}").trials


RDMD_CATEGORICAL = {
    "output": ("z", "x0", "d"),
    "init": ("auto", "start", "pinv"),
    "red_weight": ("constant", "sigma"),
    "truncate": ("all", "stochastic"),
    "data_step": ("auto", "prox"),
}


def test_categorical_options_are_drawn_and_recorded(folder, tmp_path):
    db, out = tmp_path / "s.db", tmp_path / "p.json"
    res = _tune(folder, tmp_path, sampler="rdmd", trials=6, nfe_budget=8, storage=db, output=out)
    trials = _trials(db)
    # the first trial is the defaults (enqueued), categorical ones included
    assert {k: trials[0].params[k] for k in RDMD_CATEGORICAL} == {
        "output": "z", "init": "auto", "red_weight": "constant", "truncate": "all", "data_step": "auto"
    }  # fmt: skip
    for t in trials:
        assert all(t.params[k] in values for k, values in RDMD_CATEGORICAL.items())
    assert any(t.params["output"] != "z" for t in trials[1:])  # the others are drawn, not stuck at the defaults
    entry = zt.load_presets(out)["rdmd-denoise-0.05"]
    best = max((t for t in trials if t.value is not None), key=lambda t: t.value)
    assert {k: entry.preset.params[k] for k in RDMD_CATEGORICAL} == {k: best.params[k] for k in RDMD_CATEGORICAL}
    assert res.best_params == entry.preset.params and entry.tuning["nfe_budget"] == 8


def test_param_holds_a_categorical_option_fixed(folder, tmp_path):
    db = tmp_path / "s.db"
    res = _tune(folder, tmp_path, sampler="cm4ir", trials=3, fixed={"truncation": "fit"}, storage=db)
    assert all("truncation" not in t.params and "median_fill" in t.params for t in _trials(db))
    assert res.best_params["truncation"] == "fit"


class _Counting:
    """An identity 'denoiser' that counts its calls: the NFE of a restoration, measured, not computed."""

    def __init__(self):
        self.calls = 0

    def __call__(self, x, sigma):
        self.calls += 1
        return x


def _counted_scores(monkeypatch):
    """Wrap zt._score: record (params, network calls) of every restoration with drawn options (the trials and the
    best setting; not the defaults, scored at their own steps for comparison)."""
    real, runs = zt._score, []

    def counted(pb, sampler, prior, params, *a, **k):
        before = prior.net.calls
        value = real(pb, sampler, prior, params, *a, **k)
        if "truncate" in params:
            runs.append((dict(params), prior.net.calls - before))
        return value

    monkeypatch.setattr(zt, "_score", counted)
    return runs


def _limited_prior():
    from zsir.priors.denoiser import DenoiserPrior

    prior = DenoiserPrior(_Counting(), sigma_max=0.6, name="limited")  # truncates RDMD's schedule
    prior.bytes_per_pixel()  # the memory planner's probe call, once per prior: not part of a restoration
    prior.net.calls = 0
    return prior


def test_nfe_budget_holds_for_the_drawn_categorical_options(folder, tmp_path, monkeypatch):
    """RDMD's truncate="stochastic" keeps the deterministic calls of the iterations the limited prior cannot take,
    and output "x0" / "d" add a call: the steps range must follow the options each trial drew."""
    runs, db = _counted_scores(monkeypatch), tmp_path / "s.db"
    _tune(folder, tmp_path, sampler="rdmd", prior=_limited_prior(), trials=12, nfe_budget=12, storage=db,
          fixed={"tau": 0.5, "lambda_": 20.0, "zeta": 0.0})  # fmt: skip
    assert runs and all(calls <= 12 for _, calls in runs)
    assert {p["truncate"] for p, _ in runs} == {"all", "stochastic"}  # both were scored within the budget
    # the budget is used: "all" runs more steps than "stochastic" can afford within 12 calls
    steps = {t: max(p["steps"] for p, _ in runs if p["truncate"] == t) for t in ("all", "stochastic")}
    assert steps["all"] > steps["stochastic"]
    assert all(t.user_attrs["nfe"] <= 12 for t in _trials(db) if "nfe" in t.user_attrs)


def test_trials_over_the_nfe_budget_are_pruned_unscored(folder, tmp_path, monkeypatch):
    """With steps held fixed, the options that need more calls than the budget cannot be scored."""
    runs, db = _counted_scores(monkeypatch), tmp_path / "s.db"
    res = _tune(folder, tmp_path, sampler="rdmd", prior=_limited_prior(), trials=10, nfe_budget=10, storage=db,
                fixed={"tau": 0.5, "lambda_": 20.0, "zeta": 0.0, "steps": 10, "output": "z"})  # fmt: skip
    assert runs and all(calls <= 10 for _, calls in runs)
    assert {p["truncate"] for p, _ in runs} == {"all"}
    over = [t for t in _trials(db) if t.user_attrs.get("over_budget")]
    assert over and all(t.params["truncate"] == "stochastic" and not t.intermediate_values for t in over)
    assert all("over the NFE budget" in t.user_attrs["pruned"] for t in over)
    assert res.over_budget == len(over) and res.pruned >= len(over)
    assert res.best_params["truncate"] == "all"


def test_files_restrict_the_dataset(folder, tmp_path, capsys):
    res = _tune(folder, tmp_path, trials=1, files=["im4.png", "im1.png", "im3.png"])
    t = res.entry.tuning
    assert (t["search_images"], t["heldout_images"]) == (["im1.png", "im3.png"], ["im4.png"])  # sorted, then split
    assert t["files"] == ["im4.png", "im1.png", "im3.png"]
    with pytest.raises(ValueError, match=r"files: not among the images of .*: nope\.png, im9\.png; it has 5 image"):
        _tune(folder, tmp_path, trials=1, files=["im1.png", "nope.png", "im9.png"])
    rc = main(
        ["tune", "--dataset", str(folder), "--task", "denoise", "--sampler", "pnp", "--files", "im0.png", "nope.png"]
        + ["-o", str(tmp_path / "p.json"), "--no-progress"]
    )
    assert rc == 2 and "--files: not among the images of" in capsys.readouterr().err
    assert not (tmp_path / "p.json.db").exists()  # refused before the study started


def test_builtin_validation_selects_the_prior_s_validation_images(folder, tmp_path):
    # the names the built-in prior's last training stages left out, as its weights' record lists them
    meta = json.loads((zt.Path(zsir.__file__).parent / "weights" / "builtin.json").read_text())
    excluded = meta["training"]["stages"][-1]["exclude"]
    assert list(zt.FILE_SETS["builtin-validation"]) == excluded
    d = tmp_path / "cbsd68"
    d.mkdir()
    image = Image.open(folder / "im0.png")
    for name in excluded + ["100080.png", "999999.png"]:  # two training images beside them
        image.save(d / name)
    res = _tune(d, tmp_path, trials=1, files=["builtin-validation"])
    t = res.entry.tuning
    assert t["search_images"] + t["heldout_images"] == sorted(excluded) and t["files"] == ["builtin-validation"]
    (d / excluded[3]).unlink()
    with pytest.raises(
        ValueError, match=f"files: not among the images of .*: {excluded[3]} .from 'builtin-validation'"
    ):
        _tune(d, tmp_path, trials=1, files=["builtin-validation"])


def test_resuming_a_study_on_other_images_is_refused(folder, tmp_path):
    db = tmp_path / "s.db"
    _tune(folder, tmp_path, trials=1, storage=db)
    with pytest.raises(ValueError, match="storage: the study .* searched other images"):
        _tune(folder, tmp_path, trials=2, storage=db, files=["im0.png", "im1.png", "im2.png"])
