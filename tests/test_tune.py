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
