"""zsir: zero-shot image restoration with diffusion and consistency-model priors.

Public images are ``(B, C, H, W)`` float tensors in [0, 1]; noise levels are in [0, 1] image units.
"""

from zsir.solve import SolveResult, solve

__version__ = "0.1.0"

__all__ = ["solve", "SolveResult", "load_prior", "__version__"]


def __getattr__(name):
    if name == "load_prior":
        from zsir.priors import load_prior

        return load_prior
    if name in ("models", "priors", "operators", "samplers", "metrics", "io", "gmm"):
        import importlib

        return importlib.import_module(f"zsir.{name}")
    raise AttributeError(f"module 'zsir' has no attribute {name!r}")
