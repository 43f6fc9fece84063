"""Linear operators ``y = A x`` (installed as ``zsir.operators``)."""

from zsir.operators.base import Compose, FunctionOperator, LinearOperator, SVDOperator, conjugate_gradient

__all__ = ["LinearOperator", "SVDOperator", "Compose", "FunctionOperator", "conjugate_gradient"]
