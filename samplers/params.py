r"""Typed, range-checked sampler hyperparameters: each sampler declares its :class:`Schema` once.

A :class:`Param` holds a hyperparameter's paper symbol, type, default, valid range, a one-line doc and, for
options worth tuning, what to search: a range for a number, the candidate values for a choice or a flag. The
schema is the single source for

* the defaults (``Sampler.hyperparameters`` is derived from it),
* validation of ``zsir.solve(**hyperparameters)``, the CLI's ``--param KEY=VALUE`` and every preset (checked when
  the sampler class is defined),
* tuning (:meth:`Schema.search_space`, :meth:`Param.suggest`),
* the hyperparameter table of the README (:meth:`Schema.markdown`).

Example::

    schema = Schema(
        Param("tau", float, 0.5, "split between the deterministic (0) and stochastic (1) regulariser",
              low=0.0, high=1.0, search=(0.0, 1.0)),
        Param("output", str, "z", "restoration variable or last estimate", choices=("z", "x0", "d"),
              search=("z", "d")),
    )
    schema.validate({"tau": 1}, sampler="rdmd")  # {"tau": 1.0}
    schema.validate({"tau": 1.5}, sampler="rdmd")
    # ValueError: rdmd: hyperparameter tau: expected a number in [0, 1], got 1.5
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["NOISE_INJECTION", "Param", "Schema", "readme_tables"]


def _fmt(v: float) -> str:
    return f"{v:g}"


@dataclass(frozen=True)
class Param:
    """One hyperparameter.

    Args:
        name: the paper symbol (``lambda_`` for lambda, a Python keyword).
        type: ``float``, ``int``, ``bool``, ``str`` or a class (e.g. :class:`~zsir.priors.Prior`) whose instances
            are accepted as they are.
        default: the value when none is given.
        doc: one line: what it does (units where it is a std).
        low, high: the valid range of a number (``None`` = unbounded); ``low_open`` / ``high_open`` exclude the
            bound itself.
        choices: the allowed values of a ``str`` or ``int`` parameter.
        optional: ``None`` is a valid value (meaning "infer" or "off"; the doc says which).
        per_step: a number or a sequence of numbers (one per step; the sampler checks the length).
        search: what tuning draws from; ``None`` = not tuned. For a number, a ``(low, high)`` range inside the
            valid range (:meth:`suggest` draws with ``suggest_int`` / ``suggest_float``); for a parameter with
            ``choices`` or of type ``bool`` (a *categorical* one), a tuple of at least two distinct valid values,
            the default among them (the first trial of a search is the defaults), drawn with
            ``suggest_categorical``.
        log: sample the search range on a log scale (numbers only).
    """

    name: str
    type: type
    default: Any
    doc: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple | None = None
    optional: bool = False
    per_step: bool = False
    search: tuple | None = None
    log: bool = False

    def __post_init__(self):
        if self.search is None:
            return
        if not isinstance(self.search, tuple):
            raise ValueError(f"{self.name}: search must be a tuple, got {self.search!r}")
        if self.categorical:
            self._check_candidates()
            return
        if len(self.search) != 2 or not all(self._number(v) is not None for v in self.search):
            raise ValueError(f"{self.name}: search range {self.search} is not inside {self.describe()}")
        lo, hi = self.search
        if not lo < hi or (self.log and lo <= 0):
            raise ValueError(f"{self.name}: search range {self.search} is not inside {self.describe()}")

    @property
    def categorical(self) -> bool:
        """A choice or a flag: searched by drawing one of the :attr:`search` values."""
        return self.choices is not None or self.type is bool

    def _check_candidates(self) -> None:
        valid = (False, True) if self.type is bool else self.choices
        bad = [v for v in self.search if not any(type(v) is type(c) and v == c for c in valid)]
        if self.log:
            raise ValueError(f"{self.name}: log applies to a search range of numbers, not to the values {self.search}")
        if bad or len(set(self.search)) != len(self.search) or len(self.search) < 2:
            problem = f"{bad[0]!r} is not {self.describe()}" if bad else "expected at least two distinct values"
            raise ValueError(f"{self.name}: search values {self.search}: {problem}")
        if not any(type(v) is type(self.default) and v == self.default for v in self.search):
            raise ValueError(
                f"{self.name}: search values {self.search} must include the default {self.default!r} (the first trial "
                "of a search is the defaults)"
            )

    # ----- text -----------------------------------------------------------------------------------------------
    def range_text(self) -> str:
        """The valid range in interval notation, e.g. ``[0, 1]``, ``(0, 1]``, ``>= 0``, ``> -1``; ``""`` if none."""
        lo, hi = self.low, self.high
        if lo is not None and hi is not None:
            return f"{'(' if self.low_open else '['}{_fmt(lo)}, {_fmt(hi)}{')' if self.high_open else ']'}"
        if lo is not None:
            return f"{'>' if self.low_open else '>='} {_fmt(lo)}"
        if hi is not None:
            return f"{'<' if self.high_open else '<='} {_fmt(hi)}"
        return ""

    def describe(self) -> str:
        """What a valid value is, in words (used in every error message)."""
        if self.choices is not None:
            text = "one of " + ", ".join(repr(c) for c in self.choices)
        elif self.type is bool:
            text = "true or false"
        elif self.type in (int, float):
            noun = "an integer" if self.type is int else "a number"
            rng = self.range_text()
            text = f"{noun} {'in ' if rng.startswith(('[', '(')) else ''}{rng}".rstrip()
            if self.per_step:
                text += " or a list of such numbers (one per step)"
        else:
            text = f"a {self.type.__name__}"
        return text + (" or None" if self.optional else "")

    # ----- checking -------------------------------------------------------------------------------------------
    def _in_range(self, v: float) -> bool:
        if self.low is not None and not (v > self.low if self.low_open else v >= self.low):
            return False
        return self.high is None or (v < self.high if self.high_open else v <= self.high)

    def _number(self, v: Any) -> int | float | None:
        """``v`` as this parameter's number type, or ``None`` if it is not one (or not in range)."""
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            return None
        v = float(v)
        if not math.isfinite(v):
            return None
        if self.type is int:
            if v != int(v):
                return None
            v = int(v)
        return v if self._in_range(v) else None

    def check(self, value: Any, sampler: str = "") -> Any:
        """Return ``value`` converted to this parameter's type, or raise ValueError naming the sampler, the parameter
        and the valid range."""
        if value is None and self.optional:
            return None
        out = self._convert(value)
        if out is _INVALID:
            where = f"{sampler}: " if sampler else ""
            raise ValueError(f"{where}hyperparameter {self.name}: expected {self.describe()}, got {value!r}")
        return out

    def _convert(self, v: Any) -> Any:
        if self.type is bool:
            if isinstance(v, bool):
                return v
            return bool(v) if isinstance(v, numbers.Integral) and v in (0, 1) else _INVALID
        if self.type in (int, float):
            if self.per_step and isinstance(v, Sequence) and not isinstance(v, str):
                out = [self._number(u) for u in v]
                return _INVALID if not out or any(u is None for u in out) else out
            out = self._number(v)
            if out is None or (self.choices is not None and out not in self.choices):
                return _INVALID
            return out
        if self.type is str:
            return v if isinstance(v, str) and (self.choices is None or v in self.choices) else _INVALID
        return v if isinstance(v, self.type) else _INVALID

    # ----- tuning ---------------------------------------------------------------------------------------------
    def suggest(self, trial) -> Any:
        """Draw a value from :attr:`search` with an optuna-style ``trial``: ``suggest_categorical`` over the values of
        a categorical parameter, else ``suggest_int`` / ``suggest_float`` over the range."""
        if self.search is None:
            raise ValueError(f"{self.name}: has no search range")
        if self.categorical:
            return trial.suggest_categorical(self.name, list(self.search))
        if self.type is int:
            return trial.suggest_int(self.name, int(self.search[0]), int(self.search[1]), log=self.log)
        return trial.suggest_float(self.name, float(self.search[0]), float(self.search[1]), log=self.log)


_INVALID = object()


class Schema(Mapping[str, Param]):
    """The ordered hyperparameters of one sampler, by name (a read-only mapping ``name -> Param``)."""

    def __init__(self, *params: Param):
        self._params: dict[str, Param] = {}
        for p in params:
            if p.name in self._params:
                raise ValueError(f"{p.name}: declared twice")
            self._params[p.name] = p
            p.check(p.default, "schema default")

    def __getitem__(self, name: str) -> Param:
        return self._params[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._params)

    def __len__(self) -> int:
        return len(self._params)

    def __repr__(self) -> str:
        return f"Schema({', '.join(self._params)})"

    def with_defaults(self, **defaults: Any) -> Schema:
        """A copy with other defaults (e.g. ``ddnm+`` is ``ddnm`` with ``plus=True``)."""
        unknown = sorted(set(defaults) - set(self._params))
        if unknown:
            raise ValueError(f"unknown hyperparameter(s) {unknown}")
        return Schema(*(replace(p, default=defaults.get(n, p.default)) for n, p in self._params.items()))

    def defaults(self) -> dict[str, Any]:
        """``{name: default}`` in declaration order."""
        return {n: p.default for n, p in self._params.items()}

    def validate(self, values: Mapping[str, Any], sampler: str = "") -> dict[str, Any]:
        """Check ``values`` (a subset of the names) and return them converted (ints to floats, 0/1 to bools).

        Raises ValueError for an unknown name (listing the known ones) or a value of the wrong type or out of range
        (naming the sampler, the parameter and the valid range).
        """
        where = f"{sampler}: " if sampler else ""
        unknown = sorted(set(values) - set(self._params))
        if unknown:
            raise ValueError(f"{where}unknown hyperparameter(s) {unknown}; known: {sorted(self._params)}")
        return {k: self._params[k].check(v, sampler) for k, v in values.items()}

    def search_space(self) -> dict[str, Param]:
        """The parameters that declare a search range or search values, for a tuner: ``{name: Param}``."""
        return {n: p for n, p in self._params.items() if p.search is not None}

    def markdown(self) -> str:
        """A Markdown table: name, type, default, valid values, search range (or values), doc."""
        rows = ["| name | type | default | valid | search | meaning |", "|---|---|---|---|---|---|"]
        for p in self._params.values():
            valid = p.describe()
            if p.search is None:
                search = ""
            elif p.categorical:
                search = ", ".join(repr(v) for v in p.search)
            else:
                search = f"{_fmt(p.search[0])} .. {_fmt(p.search[1])}{' (log)' * p.log}"
            default = f"{p.default:.4g}" if isinstance(p.default, float) else repr(p.default)
            rows.append(f"| `{p.name}` | {p.type.__name__} | `{default}` | {valid} | {search} | {p.doc} |")
        return "\n".join(rows)


# CM4IR's noise injection as an option of DDRM, DDNM and DiffPIR (declared once, shared by their schemas)
NOISE_INJECTION = (
    Param(
        "noise_injection", bool, False, "CM4IR's noise injection instead of the DDIM re-noising", search=(False, True)
    ),
    Param("eta_ni", float, 0.1, "fresh-noise share of the noise injection", low=0.0, high=1.0, search=(0.0, 1.0)),
)


def readme_tables() -> str:
    """The hyperparameter tables of every registered sampler, as in README.md."""
    from zsir.samplers import SAMPLERS

    return "".join(f"**`{name}`**\n\n{SAMPLERS.get(name).schema.markdown()}\n\n" for name in SAMPLERS)
