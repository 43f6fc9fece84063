"""Linear operators ``y = A x`` (installed as ``zsir.operators``)."""

from zsir.operators.base import Compose, FunctionOperator, LinearOperator, SVDOperator, conjugate_gradient
from zsir.operators.matrix import MatrixOperator

__all__ = ["LinearOperator", "SVDOperator", "Compose", "FunctionOperator", "MatrixOperator", "conjugate_gradient"]
