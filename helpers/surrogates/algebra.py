"""Proposition 1 and the direct norm check, in float64 (the linear algebra of the surrogates).

Proposition 1: with ``W^T W = U Lambda U^-1``, ``a = U^T x`` and ``b = U^-1 x``,
``sum_i lambda_i a_i b_i >= sum_i a_i b_i`` implies ``||W x|| >= ||x||``. ``W^T W`` is symmetric, so
``U`` is orthogonal, ``a = b`` and the two sides are exactly ``||W x||^2`` and ``||x||^2``: the
condition *is* the direct check. We compute both (``b`` with a linear solve, not ``U^T``) so that a
test can confirm they agree numerically.

An affine surrogate ``x -> W x + c`` is checked on its homogeneous ``(D+1) x (D+1)`` matrix
``[[W, c], [0, 1]]`` and ``[x; 1]`` (:func:`augment`), whose verdict is that of ``||W x + c|| >= ||x||``.
Matrices act on column vectors (``y = W x``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch

TIE_RTOL = 1e-9
"""Relative tolerance under which ``||W x||^2`` and ``||x||^2`` count as a tie (verdict 0)."""


def np64(a: np.ndarray | torch.Tensor) -> np.ndarray:
    """``a`` as a float64 numpy array (a detached CPU copy for tensors)."""
    if isinstance(a, torch.Tensor):
        return a.detach().to("cpu", torch.float64).numpy()
    return np.asarray(a, dtype=np.float64)


def t64(t: torch.Tensor | None) -> torch.Tensor | None:
    """``t`` as a detached float64 CPU tensor (``None`` stays ``None``)."""
    return None if t is None else t.detach().to("cpu", torch.float64)


def _blas_single_thread():
    """Limit numpy's BLAS to one thread: on a shared, busy CPU a multi-threaded ``eigh`` of a few
    hundred rows can be 20-80x slower than a single-threaded one (threadpoolctl when installed)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - optional
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def gram_eigh(w: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Eigen-decomposition of ``W^T W`` in float64 with a symmetric solver: ``(lambda ascending, U)``."""
    w64 = np64(w)
    with _blas_single_thread():
        gram = w64.T @ w64
        gram = 0.5 * (gram + gram.T)
        lam, u = np.linalg.eigh(gram)
    return lam, u


def prop1_quantities(lam: np.ndarray, u: np.ndarray, x: np.ndarray | torch.Tensor) -> dict[str, np.ndarray | float]:
    """Proposition 1's quantities for ``W^T W = U diag(lam) U^-1`` and the vector ``x``.

    Returns ``a = U^T x``, ``b = U^-1 x`` (a linear solve, not ``U^T``), ``lhs = sum lam_i a_i b_i``
    and ``rhs = sum a_i b_i``. The condition is ``lhs >= rhs``.
    """
    x64 = np64(x).reshape(-1)
    with _blas_single_thread():
        a = u.T @ x64
        b = np.linalg.solve(u, x64)
    return {"a": a, "b": b, "lhs": float(np.sum(lam * a * b)), "rhs": float(np.sum(a * b))}


def compare(lhs: float, rhs: float, rtol: float = TIE_RTOL) -> int:
    """``+1`` if ``lhs > rhs``, ``-1`` if ``lhs < rhs``, ``0`` if they tie within ``rtol * max(|lhs|, |rhs|)``."""
    tol = rtol * max(abs(lhs), abs(rhs))
    if abs(lhs - rhs) <= tol:
        return 0
    return 1 if lhs > rhs else -1


def direct_verdict(w: np.ndarray | torch.Tensor, x: np.ndarray | torch.Tensor, rtol: float = TIE_RTOL) -> int:
    """The direct check in float64: ``+1`` if ``||W x||^2 > ||x||^2``, ``0`` tie, ``-1`` otherwise."""
    w64, x64 = np64(w), np64(x).reshape(-1)
    return compare(float(np.sum((w64 @ x64) ** 2)), float(np.sum(x64**2)), rtol)


def augment(w: np.ndarray | torch.Tensor, c: np.ndarray | torch.Tensor | None) -> np.ndarray:
    """Homogeneous matrix ``[[W, c], [0, 1]]`` of the affine map ``x -> W x + c`` (float64).

    ``||[[W, c], [0, 1]] [x; 1]||^2 = ||W x + c||^2 + 1`` against ``||x||^2 + 1``: same verdict as the
    affine direct check. With ``c = None`` returns ``W`` unchanged (float64).
    """
    w64 = np64(w)
    if c is None:
        return w64
    d_out, d_in = w64.shape
    out = np.zeros((d_out + 1, d_in + 1))
    out[:d_out, :d_in] = w64
    out[:d_out, d_in] = np64(c).reshape(-1)
    out[d_out, d_in] = 1.0
    return out


def homogeneous(x: np.ndarray | torch.Tensor, with_one: bool) -> np.ndarray:
    """``[x; 1]`` when ``with_one`` (for an augmented matrix), else ``x`` (float64)."""
    x64 = np64(x).reshape(-1)
    return np.concatenate([x64, [1.0]]) if with_one else x64


@dataclass
class Affine:
    """The map ``x -> A x + c`` (``c`` may be ``None`` for a linear map); float64 tensors."""

    a: torch.Tensor
    c: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a @ x
        return y if self.c is None else y + self.c

    def then(self, outer: Affine) -> Affine:
        """``outer o self``: first this map, then ``outer``."""
        a = outer.a @ self.a
        if self.c is None and outer.c is None:
            return Affine(a)
        c = outer.a @ self.c if self.c is not None else torch.zeros(a.shape[0], dtype=a.dtype)
        return Affine(a, c if outer.c is None else c + outer.c)

    def residual(self) -> Affine:
        """``x -> x + (A x + c)``, the map with its residual connection, ``I + A``."""
        return Affine(torch.eye(self.a.shape[0], dtype=self.a.dtype) + self.a, self.c)


def evaluate_map(m: Affine, x: torch.Tensor, rtol: float = TIE_RTOL) -> dict:
    """Proposition 1 and the direct check for the map ``m`` on ``x``, plus the eigenvalues of ``W^T W``.

    For an affine map both are applied to the homogeneous matrix and ``[x; 1]`` (see :func:`augment`).
    ``ratio`` is ``||m(x)|| / ||x||`` (the affine output when there is an offset).
    """
    w = augment(m.a, m.c)
    xh = homogeneous(x, m.c is not None)
    lam, u = gram_eigh(w)
    q = prop1_quantities(lam, u, xh)
    x64 = t64(x).reshape(-1)
    ratio = float(torch.linalg.vector_norm(m(x64)) / torch.linalg.vector_norm(x64))
    return {
        "prop1_lhs": q["lhs"], "prop1_rhs": q["rhs"],
        "prop1": compare(q["lhs"], q["rhs"], rtol), "direct": direct_verdict(w, xh, rtol),
        "ratio": ratio, "eigenvalues": lam,
    }
