"""The pd resolver (zsir.samplers.pd): the anchor found by the preset file's fields, the interpolation between the
tuned preset (pd 0) and the sampler's perceptual end (pd 1), the generic fallback, and the precedence in solve."""

from __future__ import annotations

import json
import math

import pytest
import torch

import zsir
from zsir.operators import LinearOperator
from zsir.priors.base import Prior
from zsir.samplers import SAMPLERS
from zsir.samplers.params import Param, Schema
from zsir.samplers.pd import Anchor, find_anchor, interpolate, pd_params, tuned_anchors
from zsir.solve import resolve_params

RDMD, PNP, CM4IR, DPS = (SAMPLERS.get(n) for n in ("rdmd", "pnp", "cm4ir", "dps"))


def _entry(sampler, task, prior, params, sigma_y=0.05):
    return {"sampler": sampler, "task": task, "prior": prior, "sigma_y": sigma_y, "params": params, "description": "t"}


@pytest.fixture
def presets(tmp_path):
    """A preset file whose entry names say nothing about their fields (the anchor must come from the fields)."""
    path = tmp_path / "presets.json"
    entries = {
        "rdmd/alpha": _entry("rdmd", "sr4", "builtin", {"tau": 0.2, "lambda_": 5.0, "steps": 30}),
        "rdmd/beta": _entry("rdmd", "sr4", "ffdnet", {"tau": 0.4, "steps": 10}),
        "rdmd/gamma": _entry("rdmd", "inpaint-random:0.8", "builtin", {"tau": 0.3}),
        "rdmd/delta": _entry("rdmd", "sr4", "builtin", {"tau": 0.6}, sigma_y=0.2),
        "pnp/alpha": _entry("pnp", "deblur-gauss", "builtin", {"lambda_": 0.1, "steps": 6}),
    }
    path.write_text(json.dumps({"zsir_presets": 1, "presets": entries}))
    return path


class Named(Prior):
    kind, channels = "mmse", 3

    def __init__(self, name):
        super().__init__(name=name)

    def _denoise(self, x, sigma, **kw):
        return x / (1.0 + sigma**2)


def test_anchor_is_chosen_by_sampler_prior_and_task(presets):
    assert find_anchor(RDMD, "builtin", "sr4", 0.05, path=presets).name == "alpha"
    assert find_anchor(RDMD, None, "sr4", 0.05, path=presets).name == "alpha"  # None = the built-in prior
    assert find_anchor(RDMD, "ffdnet", "sr4", 0.05, path=presets).name == "beta"
    assert find_anchor(RDMD, "builtin", "inpaint-random", 0.0, path=presets).name == "gamma"  # normalised task
    assert find_anchor(RDMD, "builtin", "sr4", 0.15, path=presets).name == "delta"  # the closest sigma_y
    assert find_anchor(PNP, "builtin", "deblur-gauss", path=presets).name == "alpha"
    assert find_anchor(RDMD, Named("zsir-builtin"), "sr4", 0.05, path=presets).name == "alpha"  # a Prior's name
    assert find_anchor(RDMD, Named("ffdnet"), "sr4", 0.05, path=presets).name == "beta"
    for cls, prior, task in [(RDMD, "builtin", "sr2"), (RDMD, "ffhq", "sr4"), (CM4IR, "builtin", "sr4")]:
        assert find_anchor(cls, prior, task, 0.05, path=presets) is None
    assert find_anchor(RDMD, "builtin", None, 0.05, path=presets) is None


def test_shipped_presets_are_anchors():
    """Every entry of the shipped file is an anchor under the preset name its sampler registers."""
    for a in tuned_anchors():
        cls = SAMPLERS.get(a.sampler)
        assert cls.preset(a.name).params == cls.check_params(a.params)
        assert find_anchor(cls, a.prior, a.task, a.sigma_y) is not None


def test_anchored_ends_and_interpolation():
    anchor = Anchor("t", "rdmd", "builtin", "sr4", 0.05, {"texture": 0.2, "lambda_": 5.0, "steps": 30})
    assert pd_params(RDMD, 0.0, anchor) == {"texture": 0.2, "lambda_": 5.0, "steps": 30}
    assert pd_params(RDMD, 1.0, anchor) == {"texture": 2.0, "lambda_": 5.0, "steps": 30}  # RDMD.pd_params(1) on top
    assert pd_params(RDMD, 0.25, anchor)["texture"] == pytest.approx(0.2 + 0.25 * 1.8)  # linear
    # a parameter the anchor does not set starts at the schema default: PnP's texture 0 -> 2 (linear)
    p = pd_params(PNP, 0.5, Anchor("t", "pnp", "builtin", "sr4", 0.05, {"lambda_": 0.1, "steps": 6}))
    assert p == {"lambda_": 0.1, "steps": 6, "texture": pytest.approx(1.0)}
    # DPS zeta (log=True): geometric between the anchor's 0.4 and 10^-1
    p = pd_params(DPS, 0.5, Anchor("t", "dps", "builtin", "sr4", 0.05, {"zeta": 0.4}))
    assert p["zeta"] == pytest.approx(math.sqrt(0.4 * 0.1))


def test_interpolate_rounds_integers_and_switches_other_values():
    schema = Schema(
        Param("n", int, 1, "an integer", low=0),
        Param("s", float, 1.0, "a log-scale number", low=0.0, low_open=True, log=True),
        Param("mode", str, "a", "a choice", choices=("a", "b")),
    )
    start, end = {"n": 10, "s": 1.0, "mode": "a", "steps": 4}, {"n": 20, "s": 100.0, "mode": "b", "steps": 9}
    assert interpolate(schema, start, end, 0.24) == {"n": 12, "s": pytest.approx(100**0.24), "mode": "a", "steps": 5}
    assert interpolate(schema, start, end, 0.5)["mode"] == "b"
    assert interpolate(schema, start, end, 0.0) == start and interpolate(schema, start, end, 1.0) == end


def test_without_anchor_the_generic_mapping():
    for name in SAMPLERS:
        cls = SAMPLERS.get(name)
        for pd in (0.0, 0.3, 1.0):
            assert pd_params(cls, pd) == cls.pd_params(pd)
    with pytest.raises(ValueError, match="pd"):
        pd_params(RDMD, math.nan)


def test_generic_mapping_is_the_anchored_one_from_its_own_pd0():
    """Anchored at the generic pd 0 setting, the interpolation reproduces the generic mapping (each sampler's
    knob moves linearly, or geometrically where its schema says log)."""
    for name in SAMPLERS:
        cls = SAMPLERS.get(name)
        anchor = Anchor("t", name, "builtin", "sr4", 0.05, cls.pd_params(0.0))
        for pd in (0.25, 0.5, 0.75):
            got, want = pd_params(cls, pd, anchor), cls.pd_params(pd)
            assert got == pytest.approx(want), (name, pd)


def test_precedence_preset_pd_explicit():
    anchor = Anchor("t", "rdmd", "builtin", "sr4", 0.05, {"texture": 0.2, "zeta": 0.9, "steps": 30})
    assert resolve_params(RDMD, None, 0.5, {}, anchor=anchor) == {"texture": 1.1, "zeta": 0.9, "steps": 30}
    assert resolve_params(RDMD, None, 0.5, {"zeta": 0.1}, anchor=anchor)["zeta"] == 0.1  # explicit beats pd
    p = resolve_params(RDMD, "deblur", 0.5, {}, anchor=anchor)  # a preset's steps beat the anchor's
    assert p["steps"] == RDMD.preset("deblur").params.get("steps", 30)


def _tiny_problem():
    op = LinearOperator.from_function(lambda x: torch.nn.functional.avg_pool2d(x, 4), (3, 16, 16))
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    return op, (op.A(x) + 0.05 * torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(1))).clamp(0, 1)


def test_solve_records_the_anchor_and_uses_the_tuned_preset():
    op, y = _tiny_problem()
    tuned = PNP.preset("tuned-sr4").params
    kw = {"sampler": "pnp", "prior": Named("zsir-builtin"), "sigma_y": 0.05, "progress": False, "return_result": True}
    res = zsir.solve(y, op, pd=0.0, task="sr4", **kw)
    assert res.pd_anchor == "tuned-sr4" and res.steps == tuned["steps"]
    assert {k: res.params[k] for k in tuned if k != "steps"} == {k: v for k, v in tuned.items() if k != "steps"}
    res = zsir.solve(y, op, pd=1.0, task="sr4", steps=2, **kw)
    assert res.steps == 2 and res.params["texture"] == 2.0 and res.params["lambda_"] == tuned["lambda_"]
    for extra in ({"task": None}, {"preset": "sr4"}, {"pd": None}):  # no task, an explicit preset, no pd
        res = zsir.solve(y, op, **({"pd": 0.5, "task": "sr4"} | extra), **kw)
        assert res.pd_anchor is None
    res = zsir.solve(y, op, pd=0.5, task="sr4", preset="sr4", **kw)
    assert res.params["texture"] == pytest.approx(1.0) and res.steps == PNP.preset("sr4").params["steps"]


def test_unknown_task_fails_before_any_work():
    op, y = _tiny_problem()
    with pytest.raises(ValueError, match="unknown task 'sr5'"):
        zsir.solve(y, op, prior="no-such-prior", task="sr5")
    with pytest.raises(TypeError, match="task"):
        zsir.solve(y, op, prior="no-such-prior", task=4)


def _bench():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("zsir_pd_bench", Path(__file__).parents[1] / "benchmarks" / "pd.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_benchmark_tables_flag_a_rise(tmp_path, monkeypatch, capsys):
    """benchmarks/pd.py end to end on two synthetic images (PnP, SR x4, 2 pd values), then its tables: a PSNR that
    rises with pd is reported with the size of the rise."""
    from PIL import Image

    bench = _bench()
    data = tmp_path / "data"
    data.mkdir()
    g = torch.Generator().manual_seed(0)
    for name in ("a.png", "b.png"):
        img = torch.nn.functional.avg_pool2d(torch.rand(3, 40, 40, generator=g), 3, 1, 1)
        Image.fromarray((img.permute(1, 2, 0).numpy() * 255).astype("uint8")).save(data / name)
    out = tmp_path / "pd.json"
    argv = ["pd.py", "--data", str(data), "--start", "0", "--images", "2", "--size", "32", "--tasks", "sr4"]
    monkeypatch.setattr("sys.argv", argv + ["--samplers", "pnp", "--pd", "0", "1", "--json", str(out)])
    bench.main()
    res = json.loads(out.read_text())["results"]["sr4"]["pnp"]
    steps = SAMPLERS.get("pnp").preset("tuned-sr4").params["steps"]  # PnP: one network call per step
    assert res["anchor"] == "tuned-sr4" and set(res["pd"]) == {"0", "1"} and res["pd"]["0"]["nfe"] == steps
    assert res["pd"]["1"]["nfe"] == steps + 2  # pd 1: texture 2, the probe's two calls
    assert "| pnp | tuned-sr4 |" in capsys.readouterr().out
    row = {"psnr": 20.0, "haarpsi": 0.5, "nfe": 4}
    made = {
        "meta": {"sigma_y": 0.05, "prior": "builtin", "mapping": "anchored"},
        "results": {
            "sr4": {"x": {"anchor": None, "lpips_unavailable": None, "pd": {"0": row, "1": row | {"psnr": 20.3}}}}
        },
    }
    assert "| x | generic | 20.00 / 0.500 | 20.30 / 0.500 | no (+0.30 dB) | 4 |" in bench.tables(made)
    assert "| x | 20.00 / 20.30 (0.500 / 0.500) g |" in bench.compact(made, ("0", "1"))
    assert bench.monotone([3.0, 2.0, 2.0]) and not bench.monotone([3.0, 3.1])
    # --files: only the named images, --start / --images counted among them
    assert [n for n, _ in bench.crops(data, 0, 1, 16, 1, ["b.png"])] == ["b.png"]
    assert [n for n, _ in bench.crops(data, 1, 1, 16, 1, ["b.png", "a.png"])] == ["b.png"]
    with pytest.raises(SystemExit, match="fewer than 2"):
        bench.crops(data, 0, 2, 16, 1, ["a.png"])
