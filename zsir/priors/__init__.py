"""Priors: one denoiser protocol (``Prior.denoise``) for diffusion, consistency and exact models.

Loaders are imported lazily by :func:`load_prior`; ``diffusers`` is only imported when a network is loaded.
"""

from zsir.priors.adm import ADMPrior
from zsir.priors.base import Prior
from zsir.priors.consistency import ConsistencyPrior
from zsir.priors.denoiser import DenoiserPrior
from zsir.priors.diffusers import DiffusersPrior
from zsir.priors.diffusion import DiscreteVPPrior
from zsir.priors.exact import (
    GaussianConsistency,
    GaussianImageConsistency,
    GaussianImagePrior,
    GaussianMixturePrior,
    MixtureConsistency,
)
from zsir.priors.hub import CheckpointError, PriorDownloadError
from zsir.priors.loading import PRIORS, PriorSpec, list_priors, load_prior

__all__ = [
    "Prior",
    "DiscreteVPPrior",
    "DiffusersPrior",
    "ADMPrior",
    "ConsistencyPrior",
    "DenoiserPrior",
    "GaussianImagePrior",
    "GaussianMixturePrior",
    "GaussianConsistency",
    "GaussianImageConsistency",
    "MixtureConsistency",
    "load_prior",
    "list_priors",
    "PRIORS",
    "PriorSpec",
    "PriorDownloadError",
    "CheckpointError",
]
