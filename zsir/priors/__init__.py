"""Priors: one denoiser protocol (``Prior.denoise``) for diffusion, consistency and exact models."""

from zsir.priors.base import Prior

__all__ = ["Prior"]
