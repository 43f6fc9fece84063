"""Zero-shot restoration samplers (installed as ``zsir.samplers``)."""

from zsir.samplers.base import SAMPLERS, Preset, Sampler, randn, register_sampler

__all__ = ["SAMPLERS", "Preset", "Sampler", "randn", "register_sampler"]
