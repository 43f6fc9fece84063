"""Linear operators ``y = A x`` (installed as ``zsir.operators``)."""

from zsir.operators.base import Compose, FunctionOperator, LinearOperator, SVDOperator, conjugate_gradient
from zsir.operators.colorization import Colorization
from zsir.operators.fft import CircularBlur
from zsir.operators.identity import Identity
from zsir.operators.inpainting import Inpainting, box_mask, mask_from_image, random_mask
from zsir.operators.kernels import (
    bicubic_kernel,
    gaussian_kernel,
    gaussian_kernel_2d,
    keys_cubic,
    motion_kernel,
    uniform_kernel,
)
from zsir.operators.matrix import MatrixOperator
from zsir.operators.noise import GaussianNoise, PoissonNoise, degrade
from zsir.operators.separable import AveragePoolSR, BicubicSR, SeparableBlur, SeparableSVD

__all__ = [
    "LinearOperator",
    "SVDOperator",
    "Compose",
    "FunctionOperator",
    "MatrixOperator",
    "conjugate_gradient",
    "Identity",
    "Inpainting",
    "random_mask",
    "box_mask",
    "mask_from_image",
    "SeparableSVD",
    "AveragePoolSR",
    "BicubicSR",
    "SeparableBlur",
    "CircularBlur",
    "Colorization",
    "gaussian_kernel",
    "uniform_kernel",
    "gaussian_kernel_2d",
    "bicubic_kernel",
    "keys_cubic",
    "motion_kernel",
    "GaussianNoise",
    "PoissonNoise",
    "degrade",
]
