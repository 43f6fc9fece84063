r"""Exact priors: distributions whose denoisers, scores, consistency functions and posteriors are known in
closed form (or to ODE-solver precision). They exist to test samplers against the *true* posterior.

All classes follow the :class:`~zsir.priors.base.Prior` conventions: images ``(B, C, H, W)`` in model units,
variance-exploding noise ``x = x0 + sigma * eps`` with ``sigma`` in [-1, 1] model units. (For the synthetic
Gaussian-mixture benchmarks of :mod:`zsir.gmm` "model units" are simply the problem's own units.) Internally
everything is computed in float64 and cast back to the input dtype.

* :class:`GaussianImagePrior`: a stationary Gaussian image model with a power-law spectrum (circulant covariance,
  diagonal in the 2-D FFT). Exact MMSE denoiser, sampling, log-density, posterior mean and exact posterior
  samples under ``y = A x + n`` (closed form in the Fourier domain for FFT-diagonal operators, conjugate
  gradients plus Matheron's rule for every other operator).
* :class:`GaussianMixturePrior`: ``p(x) = sum_k w_k N(mu_k, Sigma_k)`` with isotropic or full covariances.
  Exact VE score, Tweedie denoiser, VP helpers, sampling and the exact posterior (again a mixture) under a linear
  Gaussian measurement (docs/priors/exact.md).
* :class:`GaussianConsistency`, :class:`GaussianImageConsistency`, :class:`MixtureConsistency`: exact
  consistency functions (kind ``"consistency"``) mapping ``x_sigma`` to the point ``x_{sigma_min}`` of its
  probability-flow ODE trajectory ``dx/dsigma = -sigma * score(x, sigma)``; ``f(x, sigma_min) = x``.

One module per prior: :mod:`~zsir.priors.exact.gaussian_image`, :mod:`~zsir.priors.exact.mixture` and
:mod:`~zsir.priors.exact.consistency`; every class is importable from ``zsir.priors.exact``.
"""

from zsir.priors.exact.consistency import GaussianConsistency, GaussianImageConsistency, MixtureConsistency
from zsir.priors.exact.gaussian_image import GaussianImagePrior
from zsir.priors.exact.mixture import GaussianMixturePrior

__all__ = [
    "GaussianImagePrior",
    "GaussianMixturePrior",
    "GaussianConsistency",
    "GaussianImageConsistency",
    "MixtureConsistency",
]
