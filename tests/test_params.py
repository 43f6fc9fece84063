"""The typed hyperparameter schema: every sampler's declaration, its error messages, presets and the README table.

Expected messages and ranges are typed here from the papers' constraints (fractions of fresh noise in [0, 1],
positive trade-off constants, integer timesteps of a 1000-step table), not read from the schema under test.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

import zsir
from zsir.operators import Identity
from zsir.samplers import SAMPLERS
from zsir.samplers.params import Param, Schema

# (sampler, parameter, bad value, the exact message)
BAD = [
    ("rdmd", "tau", 1.5, "rdmd: hyperparameter tau: expected a number in [0, 1], got 1.5"),
    ("rdmd", "zeta", -0.1, "rdmd: hyperparameter zeta: expected a number in [0, 1], got -0.1"),
    ("rdmd", "lambda_", -1, "rdmd: hyperparameter lambda_: expected a number >= 0, got -1"),
    ("rdmd", "lambda_", "ten", "rdmd: hyperparameter lambda_: expected a number >= 0, got 'ten'"),
    ("rdmd", "output", "x", "rdmd: hyperparameter output: expected one of 'z', 'x0', 'd', got 'x'"),
    (
        "rdmd",
        "det_input_scaling",
        "abar",
        "rdmd: hyperparameter det_input_scaling: expected one of 'none', 'sqrt_abar'",
    ),
    (
        "rdmd",
        "init",
        "zeros",
        "rdmd: hyperparameter init: expected one of 'auto', 'start', 'pinv', 'y', 'bicubic', got",
    ),
    ("rdmd", "sf", 0, "rdmd: hyperparameter sf: expected an integer >= 1 or None, got 0"),
    ("rdmd", "sf", 2.5, "rdmd: hyperparameter sf: expected an integer >= 1 or None, got 2.5"),
    ("rdmd", "data_step", "newton", "rdmd: hyperparameter data_step: expected one of 'auto', 'gradient', 'prox', got"),
    ("rdmd", "deterministic_prior", "builtin", "rdmd: hyperparameter deterministic_prior: expected a Prior or None"),
    ("cm4ir", "iN", 999, "cm4ir: hyperparameter iN: expected an integer in [0, 998], got 999"),
    ("cm4ir", "iN", 250.5, "cm4ir: hyperparameter iN: expected an integer in [0, 998], got 250.5"),
    ("cm4ir", "gamma", -0.2, "cm4ir: hyperparameter gamma: expected a number >= 0, got -0.2"),
    ("cm4ir", "eta", 1.1, "cm4ir: hyperparameter eta: expected a number in [0, 1], got 1.1"),
    ("cm4ir", "injection_type", 2, "cm4ir: hyperparameter injection_type: expected one of 0, 1, got 2"),
    ("cm4ir", "zeta", -1.0, "cm4ir: hyperparameter zeta: expected a number >= 0, got -1.0"),
    ("cm4ir", "mu", float("nan"), "cm4ir: hyperparameter mu: expected a number >= 0, got nan"),
    ("cm4ir", "delta_scale", -0.5, "cm4ir: hyperparameter delta_scale: expected a number >= 0, got -0.5"),
    ("cm4ir", "deltas", [0.1, -1.0, 0.0, 0.0], "cm4ir: hyperparameter deltas: expected a number > -1 or a list"),
    ("cm4ir", "median_fill", "yes", "cm4ir: hyperparameter median_fill: expected true or false, got 'yes'"),
    ("ddrm", "eta", 1.5, "ddrm: hyperparameter eta: expected a number in [0, 1], got 1.5"),
    ("ddrm", "eta_b", -0.1, "ddrm: hyperparameter eta_b: expected a number in [0, 1], got -0.1"),
    ("ddrm", "eta_ni", 2.0, "ddrm: hyperparameter eta_ni: expected a number in [0, 1], got 2.0"),
    ("ddrm", "noise_injection", 2, "ddrm: hyperparameter noise_injection: expected true or false, got 2"),
    ("ddnm", "zeta", -1.0, "ddnm: hyperparameter zeta: expected a number >= 0, got -1.0"),
    ("ddnm+", "eta", -0.5, "ddnm+: hyperparameter eta: expected a number in [0, 1], got -0.5"),
    ("diffpir", "lambda_", 0.0, "diffpir: hyperparameter lambda_: expected a number > 0, got 0.0"),
    ("diffpir", "zeta", 1.01, "diffpir: hyperparameter zeta: expected a number in [0, 1], got 1.01"),
    ("dps", "zeta", -0.3, "dps: hyperparameter zeta: expected a number >= 0, got -0.3"),
    ("dps", "eta", math.inf, "dps: hyperparameter eta: expected a number in [0, 1], got inf"),
    ("pnp", "lambda_", 0.0, "pnp: hyperparameter lambda_: expected a number > 0, got 0.0"),
    ("pnp", "sigma_start", -0.1, "pnp: hyperparameter sigma_start: expected a number > 0, got -0.1"),
    ("pnp", "sigma_end_min", 0, "pnp: hyperparameter sigma_end_min: expected a number > 0, got 0"),
    ("pnp", "texture", -0.1, "pnp: hyperparameter texture: expected a number in [0, 4], got -0.1"),
    ("pnp", "texture", 4.5, "pnp: hyperparameter texture: expected a number in [0, 4], got 4.5"),
    ("rdmd", "texture", -1, "rdmd: hyperparameter texture: expected a number in [0, 4], got -1"),
]


@pytest.mark.parametrize(("sampler", "key", "value", "message"), BAD, ids=[f"{s}-{k}-{v}" for s, k, v, _ in BAD])
def test_bad_value_is_rejected_with_sampler_parameter_and_range(sampler, key, value, message):
    cls = SAMPLERS.get(sampler)
    with pytest.raises(ValueError, match=re.escape(message)):
        cls.check_params({key: value})


def test_every_sampler_parameter_is_declared_with_doc_and_valid_default():
    expected = {
        "rdmd": {
            "lambda_",
            "tau",
            "zeta",
            "output",
            "det_input_scaling",
            "deterministic_prior",
            "init",
            "sf",
            "data_step",
            "red_weight",
            "truncate",
            "texture",
        },
        "cm4ir": {
            "iN",
            "gamma",
            "deltas",
            "delta_scale",
            "injection_type",
            "eta",
            "zeta",
            "mu",
            "median_fill",
            "truncation",
            "reg_schedule",
        },
        "ddrm": {"eta", "eta_b", "noise_injection", "eta_ni"},
        "ddnm": {"eta", "plus", "zeta", "noise_injection", "eta_ni"},
        "ddnm+": {"eta", "plus", "zeta", "noise_injection", "eta_ni"},
        "diffpir": {"lambda_", "zeta", "noise_injection", "eta_ni"},
        "dps": {"zeta", "eta", "zeta_scaling"},
        "pnp": {"lambda_", "sigma_start", "sigma_end_min", "texture"},
    }
    assert set(SAMPLERS) == set(expected)
    for name, keys in expected.items():
        cls = SAMPLERS.get(name)
        assert set(cls.schema) == keys and set(cls.hyperparameters) == keys
        assert all(p.doc and "\n" not in p.doc for p in cls.schema.values())
    assert SAMPLERS.get("ddnm").hyperparameters["plus"] is False and SAMPLERS.get("ddnm+").hyperparameters["plus"]


@pytest.mark.parametrize("sampler", sorted(["rdmd", "cm4ir", "ddrm", "ddnm", "ddnm+", "diffpir", "dps", "pnp"]))
def test_every_preset_validates(sampler):
    cls = SAMPLERS.get(sampler)
    for preset in cls.presets.values():
        checked = cls.check_params(preset.params)
        assert set(checked) == set(preset.params)


def test_bad_preset_fails_when_the_class_is_defined():
    from zsir.samplers.base import Preset, Sampler

    with pytest.raises(ValueError, match=r"preset 'bad': demo: hyperparameter eta: expected a number in \[0, 1\]"):

        class Demo(Sampler):
            name = "demo"
            schema = Schema(Param("eta", float, 0.5, "share", low=0.0, high=1.0))
            presets = {"bad": Preset("a typo", {"eta": 5.0})}

    with pytest.raises(ValueError, match="demo: steps: expected a positive integer"):

        class Demo2(Sampler):
            name = "demo"
            schema = Schema(Param("eta", float, 0.5, "share", low=0.0, high=1.0))
            presets = {"bad": Preset("zero steps", {"steps": 0})}


def test_a_sampler_declaring_a_plain_dict_is_told_to_use_the_schema():
    from zsir.samplers.base import Sampler

    with pytest.raises(TypeError, match="declare the hyperparameters as schema = Schema"):

        class Old(Sampler):
            hyperparameters = {"eta": 0.5}


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"ddrm: unknown hyperparameter\(s\) \['lam'\]; known: \['eta', 'eta_b'"):
        SAMPLERS.get("ddrm").check_params({"lam": 1.0})


def test_values_are_converted_to_the_declared_type():
    rdmd, cm4ir, ddrm = SAMPLERS.get("rdmd"), SAMPLERS.get("cm4ir"), SAMPLERS.get("ddrm")
    out = rdmd.check_params({"lambda_": 20, "sf": 4.0, "steps": 10})
    assert out == {"lambda_": 20.0, "sf": 4, "steps": 10}
    assert type(out["lambda_"]) is float and type(out["sf"]) is int
    assert cm4ir.check_params({"deltas": (0, 0.5, 0.1, 0)})["deltas"] == [0.0, 0.5, 0.1, 0.0]
    assert ddrm.check_params({"noise_injection": 1})["noise_injection"] is True


def test_search_space_is_inside_the_valid_range_and_log_ranges_are_positive():
    for name in SAMPLERS:
        cls = SAMPLERS.get(name)
        space = cls.search_space()
        assert space, name  # every sampler has something to tune
        for key, p in space.items():
            if p.choices is not None or p.type is bool:  # categorical: valid values, the default among them
                assert len(set(p.search)) == len(p.search) >= 2 and not p.log, key
                assert [p.check(v, name) for v in p.search] == list(p.search)
                assert cls.hyperparameters[key] in p.search, key  # the first trial of a search is the defaults
                continue
            lo, hi = p.search
            assert lo < hi
            p.check(lo, name), p.check(hi, name)  # raise if outside
            assert not p.log or lo > 0, key
    assert set(SAMPLERS.get("rdmd").search_space()) == {"lambda_", "tau", "zeta"} | set(CATEGORICAL["rdmd"])
    with pytest.raises(ValueError, match="search range"):
        Param("eta", float, 0.5, "share", low=0.0, high=1.0, search=(0.0, 2.0))


# the options searched by drawing one of their values (the ones that change the result; not the sampler's identity
# (DDNM's plus), paper-reproduction switches (RDMD's det_input_scaling) or options with no effect at the defaults
# (CM4IR's injection_type, which only acts with non-zero deltas)); init values valid for every task
CATEGORICAL = {
    "rdmd": {
        "output": ("z", "x0", "d"),
        "init": ("auto", "start", "pinv"),
        "red_weight": ("constant", "sigma"),
        "truncate": ("all", "stochastic"),
        "data_step": ("auto", "prox"),
    },
    "cm4ir": {
        "median_fill": (True, False),
        "truncation": ("drop", "fit"),
        "reg_schedule": ("constant", "tau"),
    },
    "ddrm": {"noise_injection": (False, True)},
    "ddnm": {"noise_injection": (False, True)},
    "ddnm+": {"noise_injection": (False, True)},
    "diffpir": {"noise_injection": (False, True)},
    "dps": {},
    "pnp": {},
}


@pytest.mark.parametrize("sampler", sorted(CATEGORICAL))
def test_categorical_search_values(sampler):
    space = SAMPLERS.get(sampler).search_space()
    assert {k: p.search for k, p in space.items() if p.choices is not None or p.type is bool} == CATEGORICAL[sampler]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(search=("z", "y")), "output: search values ('z', 'y'): 'y' is not one of 'z', 'x0'"),
        (dict(search=("z",)), "output: search values ('z',): expected at least two distinct values"),
        (dict(search=("z", "z")), "output: search values ('z', 'z'): expected at least two distinct values"),
        (dict(search=("x0", "x1")), "output: search values ('x0', 'x1'): 'x1' is not"),
        (dict(default="x0", search=("z", "x1")), "'x1' is not one of"),
        (dict(search=("z", "x0"), log=True), "output: log applies to a search range of numbers"),
        (dict(search=["z", "x0"]), "output: search must be a tuple"),
    ],
)
def test_invalid_categorical_search_values_name_the_parameter(kwargs, message):
    args = dict(name="output", type=str, default="z", doc="estimate", choices=("z", "x0")) | kwargs
    with pytest.raises(ValueError, match=re.escape(message)):
        Param(**args)


def test_categorical_search_must_hold_the_default_and_valid_flags():
    with pytest.raises(ValueError, match=re.escape("output: search values ('x0', 'd') must include the default 'z'")):
        Param("output", str, "z", "estimate", choices=("z", "x0", "d"), search=("x0", "d"))
    with pytest.raises(ValueError, match=re.escape("fill: search values (False, 1): 1 is not true or false")):
        Param("fill", bool, False, "fill holes", search=(False, 1))
    with pytest.raises(ValueError, match=re.escape("kind: search values (0, 2): 2 is not one of 0, 1")):
        Param("kind", int, 0, "kind", choices=(0, 1), search=(0, 2))
    with pytest.raises(ValueError, match=re.escape("eta: search range (0.0, 0.5, 1.0) is not inside")):
        Param("eta", float, 0.5, "share", low=0.0, high=1.0, search=(0.0, 0.5, 1.0))
    # a copy with another default keeps the check (ddnm+ is ddnm with plus=True)
    schema = Schema(Param("output", str, "z", "estimate", choices=("z", "x0", "d"), search=("z", "x0")))
    with pytest.raises(ValueError, match="must include the default 'd'"):
        schema.with_defaults(output="d")


def test_markdown_shows_the_categorical_search_values():
    schema = Schema(
        Param("fill", bool, True, "fill holes", search=(True, False)),
        Param("output", str, "z", "estimate", choices=("z", "x0", "d"), search=("z", "d")),
        Param("eta", float, 0.5, "share", low=0.0, high=1.0, search=(0.0, 1.0)),
    )
    rows = schema.markdown().split("\n")[2:]
    assert rows[0] == "| `fill` | bool | `True` | true or false | True, False | fill holes |"
    assert rows[1] == "| `output` | str | `'z'` | one of 'z', 'x0', 'd' | 'z', 'd' | estimate |"
    assert rows[2] == "| `eta` | float | `0.5` | a number in [0, 1] | 0 .. 1 | share |"


def test_suggest_draws_from_the_search_range_with_optuna():
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    cm4ir = SAMPLERS.get("cm4ir")
    for _ in range(5):
        trial = study.ask()
        params = {k: p.suggest(trial) for k, p in cm4ir.search_space().items()}
        assert isinstance(params["iN"], int) and 20 <= params["iN"] <= 500
        assert 0.005 <= params["gamma"] <= 1.0
        cm4ir.check_params(params)
        study.tell(trial, 0.0)


def test_suggest_draws_categorical_values_with_optuna():
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    rdmd, drawn = SAMPLERS.get("rdmd"), []
    for _ in range(30):
        trial = study.ask()
        params = {k: p.suggest(trial) for k, p in rdmd.search_space().items()}
        assert isinstance(trial.distributions["truncate"], optuna.distributions.CategoricalDistribution)
        assert trial.distributions["output"].choices == ("z", "x0", "d")
        drawn.append(params)
        rdmd.check_params(params)
        study.tell(trial, 0.0)
    assert {p["output"] for p in drawn} == {"z", "x0", "d"} and {p["truncate"] for p in drawn} == {"all", "stochastic"}
    flags = [SAMPLERS.get("cm4ir").schema["median_fill"].suggest(study.ask()) for _ in range(20)]
    assert set(flags) == {True, False} and all(type(f) is bool for f in flags)


def test_solve_rejects_a_bad_value_before_loading_the_prior():
    y = torch.rand(1, 3, 8, 8)
    # the prior name does not exist: the hyperparameter error must come first
    with pytest.raises(ValueError, match=re.escape("rdmd: hyperparameter tau: expected a number in [0, 1], got 2.0")):
        zsir.solve(y, Identity(), sampler="rdmd", prior="no-such-prior", tau=2.0, progress=False)


def test_cli_param_out_of_range_is_a_usage_error(tmp_path, capsys):
    from PIL import Image

    from zsir.cli import main

    Image.new("RGB", (16, 16)).save(tmp_path / "a.png")
    argv = ["restore", str(tmp_path / "a.png"), "-o", str(tmp_path / "o"), "--task", "sr4", "--no-progress"]
    rc = main(argv + ["--sampler", "cm4ir", "--param", "eta=1.5"])
    err = capsys.readouterr().err
    assert rc == 2 and "--param: cm4ir: hyperparameter eta: expected a number in [0, 1], got 1.5" in err


def test_readme_table_is_the_schema():
    from zsir.samplers.params import readme_tables

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    m = re.search(r"<!-- hyperparameters:begin -->\n(.*)<!-- hyperparameters:end -->", readme, re.S)
    assert m, "README.md lacks the hyperparameter tables"
    assert m.group(1) == readme_tables(), (
        "regenerate: python -c 'from zsir.samplers.params import readme_tables; print(readme_tables(), end=\"\")'"
    )
