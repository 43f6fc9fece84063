r"""Linear operators ``y = A x`` on image batches.

Every operator acts on ``x`` of shape ``(B, C, H, W)`` and is **linear**: it does not care whether images are in
[0, 1] or [-1, 1] (the conversion of measurements lives in :mod:`zsir.units`).

Three tiers, one API:

* :class:`SVDOperator`: ``A = U diag(s) V^T`` in closed form (inpainting, SR, separable blur, colourisation).
* FFT-diagonal operators (:class:`~zsir.operators.CircularBlur`): exact pinv and prox through the FFT.
* :meth:`LinearOperator.from_function`: any linear callable; adjoint by autograd, pinv and prox by conjugate
  gradients. The generic methods of :class:`LinearOperator` are also the reference the closed forms are tested
  against.

**Spectral layout (the one coefficient layout).** For an :class:`SVDOperator` the spectral coefficients
``c = Vt(x)`` are a tensor with *the same shape as x*; ``V(c)`` inverts it exactly (``V`` is orthogonal).
``singulars(x_shape)`` returns ``s`` broadcastable to that shape, **zero where A has no singular value**.
``Ut(y)`` maps a measurement into the same layout (zeros where ``s == 0``) and ``U(c)`` maps back to y (entries
where ``s == 0`` are ignored). Hence, elementwise::

    A(x)        = U(s * Vt(x))
    At(y)       = V(s * Ut(y))
    pinv(y, e)  = V(s / (s^2 + e) * Ut(y))      (0 where s == 0)
    prox_l2     = V((gamma s Ut(y) + Vt(z)) / (gamma s^2 + 1))

There is no channel interleaving: coefficient ``[b, c, i, j]`` belongs to channel ``c`` (the DDRM ``Deblurring``
class tiles singular values channel-major against pixel-major coefficients; zsir cannot, by construction).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

__all__ = ["LinearOperator", "SVDOperator", "Compose", "FunctionOperator", "conjugate_gradient"]

Shape = tuple[int, ...]


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """Per-sample inner product, shape (B, 1, 1, 1)."""
    return (a * b).flatten(1).sum(1).reshape(-1, *([1] * (a.dim() - 1)))


def conjugate_gradient(
    matvec: Callable[[Tensor], Tensor],
    b: Tensor,
    x0: Tensor | None = None,
    *,
    tol: float = 1e-6,
    max_iter: int = 500,
) -> Tensor:
    """Solve ``M x = b`` for a symmetric positive semi-definite ``M``, independently per sample of the batch.

    Stops when every sample's residual norm is below ``tol * ||b||``. Started from zero, the iterates stay in the
    range of ``M``, so for a consistent singular system it returns the minimum-norm solution.
    """
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - matvec(x) if x0 is not None else b.clone()
    p = r.clone()
    rs = _dot(r, r)
    bnorm2 = _dot(b, b).clamp_min(torch.finfo(b.dtype).tiny)
    for _ in range(max_iter):
        if bool((rs <= (tol**2) * bnorm2).all()):
            break
        mp = matvec(p)
        pmp = _dot(p, mp)
        alpha = torch.where(pmp > 0, rs / pmp.clamp_min(torch.finfo(b.dtype).tiny), torch.zeros_like(rs))
        x = x + alpha * p
        r = r - alpha * mp
        rs_new = _dot(r, r)
        beta = torch.where(rs > 0, rs_new / rs.clamp_min(torch.finfo(b.dtype).tiny), torch.zeros_like(rs))
        p = r + beta * p
        rs = rs_new
    return x


class LinearOperator(nn.Module):
    """Base class: a linear map ``A`` from images ``(B, C, H, W)`` to measurements.

    Subclasses implement :meth:`A` and :meth:`y_shape`; everything else has a generic fallback (autograd
    adjoint, conjugate gradients for :meth:`pinv` and :meth:`prox_l2`, power iteration for :meth:`norm`)
    that closed-form subclasses override.

    Attributes:
        cg_tol: relative residual tolerance of the conjugate-gradient fallback.
        cg_max_iter: iteration cap of the conjugate-gradient fallback.
    """

    cg_tol: float = 1e-6
    cg_max_iter: int = 1000

    # ----- the map itself -------------------------------------------------------------------------------------
    def A(self, x: Tensor) -> Tensor:
        """Apply the operator: ``y = A x``."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self.A(x)

    def y_shape(self, x_shape: Sequence[int]) -> Shape:
        """Measurement shape for an image shape ``(B, C, H, W)``; raises ValueError when the size does not fit."""
        raise NotImplementedError

    def x_shape(self, y_shape: Sequence[int]) -> Shape:
        """Image shape for a measurement shape; raises ValueError when no image size fits."""
        raise NotImplementedError

    def check_x(self, x: Tensor, name: str = "x") -> None:
        """Raise ValueError unless ``x`` is a (B, C, H, W) tensor this operator accepts."""
        if not isinstance(x, Tensor) or x.dim() != 4:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{name}: expected a tensor of shape (B, C, H, W), got {got}")
        self.y_shape(tuple(x.shape))

    def check_y(self, y: Tensor, name: str = "y") -> None:
        """Raise ValueError unless ``y`` has a shape this operator can produce."""
        if not isinstance(y, Tensor) or y.dim() != 4:
            got = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
            raise ValueError(f"{name}: expected a tensor of shape (B, C, H, W), got {got}")
        self.x_shape(tuple(y.shape))

    # ----- generic fallbacks ----------------------------------------------------------------------------------
    def At(self, y: Tensor) -> Tensor:
        """Adjoint ``A^T y`` (generic: vector-Jacobian product by autograd)."""
        x_shape = self.x_shape(tuple(y.shape))
        with torch.inference_mode(False), torch.enable_grad():  # also inside a sampler's inference mode
            x = torch.zeros(x_shape, device=y.device, dtype=y.dtype, requires_grad=True)
            (g,) = torch.autograd.grad(self.A(x), x, grad_outputs=y)
        return g

    def AtA(self, x: Tensor) -> Tensor:
        """``A^T A x``."""
        return self.At(self.A(x))

    def pinv(self, y: Tensor, eta: float | Tensor = 0.0) -> Tensor:
        r"""Regularised pseudo-inverse ``A^T (A A^T + eta I)^{-1} y = (A^T A + eta I)^{-1} A^T y``.

        With ``eta = 0`` this is the Moore-Penrose pseudo-inverse ``A^+ y`` (minimum-norm least squares); it is
        safe where singular values vanish. ``eta`` is in the squared units of ``y`` (a float or ``(B,1,1,1)``).
        Generic version: conjugate gradients on the normal equations, started from zero.
        """
        eta_t = torch.as_tensor(eta, dtype=y.dtype, device=y.device)
        return conjugate_gradient(
            lambda v: self.AtA(v) + eta_t * v, self.At(y), tol=self.cg_tol, max_iter=self.cg_max_iter
        )

    def prox_l2(self, z: Tensor, y: Tensor, gamma: float | Tensor) -> Tensor:
        r"""``argmin_x gamma/2 ||A x - y||^2 + 1/2 ||x - z||^2 = (gamma A^T A + I)^{-1} (gamma A^T y + z)``.

        ``gamma`` is a float or a per-sample ``(B, 1, 1, 1)`` tensor. Generic version: conjugate gradients.
        """
        g = torch.as_tensor(gamma, dtype=z.dtype, device=z.device)
        return conjugate_gradient(
            lambda v: g * self.AtA(v) + v, g * self.At(y) + z, x0=z, tol=self.cg_tol, max_iter=self.cg_max_iter
        )

    def norm(self, x_shape: Sequence[int], *, max_iter: int = 200, tol: float = 1e-7, generator=None) -> float:
        """Spectral norm ``||A||`` for images of ``x_shape`` (power iteration on ``A^T A``, float64)."""
        x = torch.randn(tuple(x_shape), dtype=torch.float64, generator=generator)
        x = x / x.norm()
        lam = 0.0
        for _ in range(max_iter):
            ax = self.AtA(x)
            new = float(ax.norm())
            if new == 0.0:
                return 0.0
            x = ax / new
            if abs(new - lam) <= tol * new:
                lam = new
                break
            lam = new
        return lam**0.5

    def ones_image(self, x_shape: Sequence[int], *, device=None, dtype=torch.float32) -> Tensor:
        """``A(1)``: the operator applied to an all-ones image (used by :mod:`zsir.units`)."""
        return self.A(torch.ones(tuple(x_shape), device=device, dtype=dtype))

    # ----- composition ----------------------------------------------------------------------------------------
    def __matmul__(self, other: LinearOperator) -> Compose:
        """``op2 @ op1`` is the composition ``x -> op2.A(op1.A(x))``."""
        if not isinstance(other, LinearOperator):
            return NotImplemented
        return Compose(other, self)

    @classmethod
    def from_function(
        cls,
        A: Callable[[Tensor], Tensor],
        x_shape: Sequence[int],
        At: Callable[[Tensor], Tensor] | None = None,
    ) -> FunctionOperator:
        """Bring your own linear ``A``.

        Args:
            A: a linear function of a ``(B, C, H, W)`` tensor (any measurement shape).
            x_shape: the image shape ``(C, H, W)`` (or ``(B, C, H, W)``; the batch size is ignored).
            At: optional closed-form adjoint; by default it is computed by autograd.

        Returns:
            an operator whose adjoint comes from autograd and whose ``pinv``/``prox_l2`` use conjugate gradients.
        """
        return FunctionOperator(A, x_shape, At)


class FunctionOperator(LinearOperator):
    """A user-supplied linear function (see :meth:`LinearOperator.from_function`)."""

    def __init__(self, fn: Callable[[Tensor], Tensor], x_shape: Sequence[int], adjoint=None):
        super().__init__()
        x_shape = tuple(int(v) for v in x_shape)
        if len(x_shape) == 4:
            x_shape = x_shape[1:]
        if len(x_shape) != 3:
            raise ValueError(f"x_shape: expected (C, H, W), got {x_shape}")
        self.fn = fn
        self.adjoint = adjoint
        self._x_shape = x_shape
        with torch.no_grad():
            self._y_shape = tuple(fn(torch.zeros((1, *x_shape), dtype=torch.float64)).shape[1:])

    def A(self, x: Tensor) -> Tensor:
        return self.fn(x)

    def At(self, y: Tensor) -> Tensor:
        return super().At(y) if self.adjoint is None else self.adjoint(y)

    def y_shape(self, x_shape):
        if tuple(x_shape[1:]) != self._x_shape:
            raise ValueError(f"x: expected shape (B, {', '.join(map(str, self._x_shape))}), got {tuple(x_shape)}")
        return (x_shape[0], *self._y_shape)

    def x_shape(self, y_shape):
        if tuple(y_shape[1:]) != self._y_shape:
            raise ValueError(f"y: expected shape (B, {', '.join(map(str, self._y_shape))}), got {tuple(y_shape)}")
        return (y_shape[0], *self._x_shape)


class Compose(LinearOperator):
    """``Compose(op1, op2)`` applies ``op1`` first, then ``op2`` (so it equals ``op2 @ op1``).

    pinv and prox use the generic conjugate-gradient fallback.
    """

    def __init__(self, *ops: LinearOperator):
        super().__init__()
        if not ops:
            raise ValueError("Compose: expected at least one operator")
        self.ops = nn.ModuleList(ops)

    def A(self, x: Tensor) -> Tensor:
        for op in self.ops:
            x = op.A(x)
        return x

    def At(self, y: Tensor) -> Tensor:
        for op in reversed(self.ops):
            y = op.At(y)
        return y

    def y_shape(self, x_shape):
        for op in self.ops:
            x_shape = op.y_shape(x_shape)
        return tuple(x_shape)

    def x_shape(self, y_shape):
        for op in reversed(self.ops):
            y_shape = op.x_shape(y_shape)
        return tuple(y_shape)


class SVDOperator(LinearOperator):
    """An operator with a closed-form SVD ``A = U diag(s) V^T`` in the layout of the module docstring.

    Subclasses implement :meth:`Vt`, :meth:`V`, :meth:`Ut`, :meth:`U`, :meth:`singulars` and the shape methods.
    """

    def Vt(self, x: Tensor) -> Tensor:
        """Spectral coefficients of an image (same shape as x)."""
        raise NotImplementedError

    def V(self, c: Tensor) -> Tensor:
        """Image from spectral coefficients (inverse of :meth:`Vt`)."""
        raise NotImplementedError

    def Ut(self, y: Tensor) -> Tensor:
        """Measurement -> spectral layout (shape of x, zeros where ``s == 0``)."""
        raise NotImplementedError

    def U(self, c: Tensor) -> Tensor:
        """Spectral layout -> measurement (entries where ``s == 0`` are ignored)."""
        raise NotImplementedError

    def singulars(self, x_shape: Sequence[int], *, device=None, dtype=torch.float32) -> Tensor:
        """Singular values, broadcastable to the spectral layout of ``x_shape``; zero where A has none."""
        raise NotImplementedError

    def _s_like(self, c: Tensor) -> Tensor:
        return self.singulars(tuple(c.shape), device=c.device, dtype=c.dtype)

    def A(self, x: Tensor) -> Tensor:
        self.check_x(x)
        c = self.Vt(x)
        return self.U(self._s_like(c) * c)

    def At(self, y: Tensor) -> Tensor:
        c = self.Ut(y)
        return self.V(self._s_like(c) * c)

    def pinv(self, y: Tensor, eta: float | Tensor = 0.0) -> Tensor:
        c = self.Ut(y)
        s = self._s_like(c)
        eta = torch.as_tensor(eta, dtype=c.dtype, device=c.device)
        keep = s > 0
        factor = torch.where(keep, s / torch.where(keep, s * s + eta, torch.ones_like(s)), torch.zeros_like(s))
        return self.V(factor * c)

    def prox_l2(self, z: Tensor, y: Tensor, gamma: float | Tensor) -> Tensor:
        c_y = self.Ut(y)
        s = self._s_like(c_y)
        g = torch.as_tensor(gamma, dtype=z.dtype, device=z.device)
        return self.V((g * s * c_y + self.Vt(z)) / (g * s * s + 1.0))

    def norm(self, x_shape: Sequence[int], **kwargs) -> float:
        return float(self.singulars(x_shape, dtype=torch.float64).abs().max())
