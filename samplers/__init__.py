"""Zero-shot restoration samplers (installed as ``zsir.samplers``).

Importing the package registers every sampler in :data:`SAMPLERS`.
"""

from zsir.samplers import cm4ir, ddnm, ddrm, diffpir, dps, pnp, rdmd
from zsir.samplers.base import SAMPLERS, DiffusionSampler, Preset, Sampler, randn, register_sampler

__all__ = [
    "SAMPLERS",
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
