r"""The perception-distortion knob ``pd``, resolved for a sampler, a prior and a task.

``pd`` in [0, 1]: 0 = the lowest-distortion setting zsir knows for the run, 1 = the most perceptual one.

* **Anchored** (a preset tuned for this sampler, prior and task exists): ``pd = 0`` is that preset, ``steps``
  included; ``pd = 1`` is the sampler's perceptual end applied on top of it, ``{**preset, **pd_params(1)}``. In
  between, every number that differs between the two ends is interpolated at ``t = pd``:

  .. math::

      p(t) = (1 - t)\, p_0 + t\, p_1 \quad\text{or}\quad p(t) = p_0^{1 - t}\, p_1^{t}\ \text{(parameters declared
      ``log=True`` in the sampler's schema)},

  integers rounded; a value that is not a number (a flag, a choice) keeps the pd 0 end below ``pd = 0.5`` and the
  pd 1 end from there on. A parameter the preset does not set starts from the schema default.
* **Generic** (no such preset): the sampler's own mapping :meth:`~zsir.samplers.base.Sampler.pd_params`, the same
  for every prior and task.

The tuned presets are the entries of ``tuned_presets.json`` (written by ``zsir tune``), chosen by their fields
``sampler``, ``prior`` and ``task``: the anchor is the entry for the run's sampler, prior and task (of several, the
one whose ``sigma_y`` is closest to the run's). Its name is the preset name the sampler registers it under (the
entry key after ``SAMPLER/``, e.g. ``tuned-sr4``), recorded by :func:`zsir.solve` as ``SolveResult.pd_anchor``.

Example::

    from zsir.samplers import SAMPLERS
    from zsir.samplers.pd import find_anchor, pd_params

    cls = SAMPLERS.get("rdmd")
    anchor = find_anchor(cls, prior="builtin", task="sr4", sigma_y=0.05)  # the tuned-sr4 entry
    pd_params(cls, 0.0, anchor)  # the tuned preset (steps included)
    pd_params(cls, 0.5, anchor)  # half-way to tau = 1
    pd_params(cls, 0.5)  # no anchor: RDMD.pd_params(0.5)
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cache
from numbers import Real
from pathlib import Path
from typing import Any

__all__ = ["Anchor", "tuned_anchors", "find_anchor", "pd_params", "interpolate"]


@dataclass(frozen=True)
class Anchor:
    """A tuned preset that serves as the pd 0 end for one sampler, prior and task.

    Attributes:
        name: the preset name the sampler knows it by (``tuned-sr4``; pass it as ``preset=`` to get pd 0 exactly).
        sampler: registry name of the sampler.
        prior: registry name of the prior it was tuned with (``builtin``, ``ffdnet``).
        task: the task it was tuned on, as :func:`zsir.tasks.parse_task` names it (``sr4``, ``inpaint-random:0.8``).
        sigma_y: the measurement noise it was tuned for, [0, 1] image units.
        params: its hyperparameters, ``steps`` included.
    """

    name: str
    sampler: str
    prior: str
    task: str
    sigma_y: float
    params: dict[str, Any] = field(default_factory=dict)


@cache
def _anchors(path: str) -> tuple[Anchor, ...]:
    data = json.loads(Path(path).read_text())["presets"]
    return tuple(
        Anchor(key.split("/", 1)[1], e["sampler"], e["prior"], e["task"], float(e["sigma_y"]), dict(e["params"]))
        for key, e in data.items()
    )


def tuned_anchors(path: str | Path | None = None) -> tuple[Anchor, ...]:
    """Every tuned preset of ``path`` (default: the shipped ``tuned_presets.json``) as an :class:`Anchor`."""
    from zsir.samplers import TUNED_PRESETS

    return _anchors(str(TUNED_PRESETS if path is None else path))


def _prior_names(prior: Any) -> set[str]:
    """The names a prior answers to: a registry name as given, or a :class:`~zsir.priors.Prior`'s ``name``
    (``zsir-builtin`` also answers to ``builtin``)."""
    name = prior if isinstance(prior, str) else getattr(prior, "name", None)
    if not isinstance(name, str):
        return set()
    name = name.lower()
    return {name, name.removeprefix("zsir-")}


def find_anchor(
    sampler_cls: type,
    prior: Any,
    task: str | None,
    sigma_y: float | None = None,
    path: str | Path | None = None,
) -> Anchor | None:
    """The tuned preset that anchors pd for ``sampler_cls`` on ``prior`` and ``task``, or ``None``.

    Args:
        sampler_cls: a :class:`~zsir.samplers.Sampler` subclass.
        prior: a prior's registry name (``"builtin"``, ``None`` = the built-in) or a :class:`~zsir.priors.Prior`.
        task: a task name of :mod:`zsir.tasks` (normalised with :func:`~zsir.tasks.parse_task`, so
            ``inpaint-random`` finds ``inpaint-random:0.8``), a :class:`~zsir.tasks.Task`, or ``None`` (no anchor).
        sigma_y: the run's measurement noise std, **[0, 1] image units**; among several entries the closest wins.
        path: a preset file of ``zsir tune`` (default: the shipped tuned presets).
    """
    if task is None:
        return None
    from zsir.tasks import Task, parse_task

    task_name = task.name if isinstance(task, Task) else parse_task(task).name
    names = _prior_names("builtin" if prior is None else prior)
    match = [
        a
        for a in tuned_anchors(path)
        if a.sampler == sampler_cls.name and a.task == task_name and a.prior.lower() in names
    ]
    if not match:
        return None
    return min(match, key=lambda a: abs(a.sigma_y - (sigma_y or 0.0)))


def _is_number(v: Any) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool)


def interpolate(schema, start: dict[str, Any], end: dict[str, Any], t: float) -> dict[str, Any]:
    """The hyperparameters at ``t`` in [0, 1] between ``start`` (t = 0) and ``end`` (t = 1), key by key.

    Numbers move linearly, or geometrically for a parameter declared ``log=True`` in ``schema`` (both ends
    positive); integers (and ``steps``) are rounded; other values switch from ``start`` to ``end`` at ``t = 0.5``.
    A key of only one side keeps that side's value.
    """
    out = {**start, **end}
    for key in start.keys() & end.keys():
        a, b = start[key], end[key]
        if a == b or t in (0.0, 1.0):
            out[key] = a if t == 0.0 else b
        elif _is_number(a) and _is_number(b):
            param = schema.get(key)
            if param is not None and param.log and a > 0 and b > 0:
                v = math.exp((1.0 - t) * math.log(a) + t * math.log(b))
            else:
                v = (1.0 - t) * a + t * b
            integer = key == "steps" or (param is not None and param.type is int)
            out[key] = round(v) if integer else v
        else:
            out[key] = a if t < 0.5 else b
    return out


def pd_params(sampler_cls: type, pd: float, anchor: Anchor | None = None) -> dict[str, Any]:
    """Hyperparameters (``steps`` included when anchored) for position ``pd`` in [0, 1]; see the module docstring.

    Without ``anchor`` this is ``sampler_cls.pd_params(pd)``. With it: ``pd = 0`` gives the anchor's parameters,
    ``pd = 1`` gives them overridden by ``sampler_cls.pd_params(1.0)``, and values in between are interpolated
    (:func:`interpolate`).
    """
    pd = float(pd)
    if not 0.0 <= pd <= 1.0:  # also rejects NaN
        raise ValueError(f"pd: expected a number in [0, 1] (0 = faithful, 1 = perceptual), got {pd}")
    if anchor is None:
        return sampler_cls.pd_params(pd)
    start = dict(anchor.params)
    end = {**start, **sampler_cls.pd_params(1.0)}
    start.update({k: sampler_cls.hyperparameters[k] for k in end.keys() - start.keys()})
    return interpolate(sampler_cls.schema, start, end, pd)
