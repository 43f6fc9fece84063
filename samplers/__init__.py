"""Zero-shot restoration samplers (installed as ``zsir.samplers``).

Importing the package registers every sampler in :data:`SAMPLERS`, and adds the presets tuned for the built-in
prior (``tuned_presets.json``, written by ``zsir tune``; entry ``"SAMPLER/tuned-TASK"``) to each sampler's
``presets`` as ``"tuned-TASK"``, beside the published ones.
"""

import json
from pathlib import Path

from zsir.samplers import cm4ir, ddnm, ddrm, diffpir, dps, pnp, rdmd
from zsir.samplers.base import SAMPLERS, DiffusionSampler, Preset, Sampler, randn, register_sampler

TUNED_PRESETS = Path(__file__).with_name("tuned_presets.json")


def _register_tuned_presets() -> None:
    for key, entry in json.loads(TUNED_PRESETS.read_text())["presets"].items():
        cls = SAMPLERS.get(entry["sampler"])
        name = key.split("/", 1)[1]
        cls.presets = {**cls.presets, name: Preset(entry["description"], cls.check_params(dict(entry["params"])))}


_register_tuned_presets()

__all__ = [
    "SAMPLERS",
    "TUNED_PRESETS",
    "DiffusionSampler",
    "Preset",
    "Sampler",
    "randn",
    "register_sampler",
    "cm4ir",
    "ddnm",
    "ddrm",
    "diffpir",
    "dps",
    "pnp",
    "rdmd",
]
