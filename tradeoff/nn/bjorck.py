"""deel-lip's spectral normalisation: power iteration, then Björck orthonormalisation.

`power_iteration` and `bjorck_orthonormalize` are the iterations as deel-lip writes them.
`spectral_bjorck` is the whole map of a `SpectralLinear`/`SpectralConv2d` weight (power
iteration from a persistent vector, division by σ + eps, Björck); on CPU, for a matrix whose
short side is at most `GRAM_FORM_MAX_SIDE` (the seed's 64×1568 dense layer, its 16×9 and
32×144 kernels), it computes the very same iterates from one eigendecomposition of the short
side's Gram matrix (`_SpectralBjorckGram`): the long side is then touched by two products
forward and two backward, instead of two per power iteration and four per Björck iteration.

The scalar recursions on the eigenvalues are ~200 operations on vectors of at most a few
hundred entries, where torch's per-operation overhead would dominate: they run in C
(`_spectral.c`, built by setup.py), or in NumPy without it. A weight with a short side of at
most `SMALL_MAX_SIDE` (the seed's 16×9 and 32×144 kernels and its 10×64 head) takes the whole
map, forward and backward, in those C loops, after one `torch.linalg.eigh`: there, two dozen
torch operations on a training step's cold caches cost more than the arithmetic.

A dense layer's training step need not form its weight at all (`spectral_bjorck_linear`): the
constrained weight is an n × n matrix times the short side, so the layer's outputs (or inputs)
are mixed by that n × n matrix after (before) the unconstrained product, which saves the long
side's products wherever the batch has fewer rows than the long side.

Which of these runs is decided in one place, `_path`; `power_iteration` and
`bjorck_orthonormalize`'s iterations are the plain-torch reference they are tested against
(`native.limited_to("torch")` makes the layers take it, `"numpy"` keeps C out).
"""

from __future__ import annotations

import itertools
import math
from types import ModuleType
from typing import NamedTuple

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from . import native
from ._torch_private import functorch_transforms_active
from .tracing import apply_function, autocast_enabled, full_precision, traced

__all__ = [
    "bjorck_orthonormalize",
    "power_iteration",
    "spectral_bjorck",
    "spectral_bjorck_linear",
    "spectral_implementation",
]


# Largest weights that take the whole map in C (`_spectral.c`: float64 loops after eigh):
# on a training step's cold caches, the ~25 torch operations of the general path cost more
# than the arithmetic below these sizes (measured on 2 CPU threads, see `tradeoff-bench`).
SMALL_MAX_SIDE = 32
SMALL_MAX_SIZE = 16384


def spectral_implementation() -> str:
    """What the spectral layers run on here and now, in words (the bench prints it)."""
    if not native.allows("numpy"):
        return "torch ops: deel-lip's power and Björck iterations (the reference)"
    mixing = "; dense training steps mix by the n x n factor"
    if _kernel() is None:
        why = "not built; see setup.py" if native.spectral() is None else "not allowed here"
        return f"torch ops + NumPy loops (the C kernel is {why})" + mixing
    return f"C for weights with a side <= {SMALL_MAX_SIDE}, torch ops + C loops above" + mixing


REFERENCE, GRAM, SMALL, FACTORED = "reference", "gram", "small", "factored"


def _path(weight: torch.Tensor, u: torch.Tensor | None, x: torch.Tensor | None = None) -> str:
    """How the spectral map of `weight` (taken as (shape[0], rest)) runs here: the one place
    that decides it.

    - REFERENCE: deel-lip's iterations in plain torch ops: off CPU, on traced tensors (torch.func,
      torch.compile: NumPy and C cannot read them), for a short side above
      `GRAM_FORM_MAX_SIDE`, or under `native.limited_to("torch")`;
    - SMALL: the whole map in C (`_SmallSpectral`), for weights within `SMALL_MAX_SIDE` and
      `SMALL_MAX_SIZE` when the kernel is built and allowed, outside torch.func transforms;
    - FACTORED, given the input `x` of a dense layer's training step: the layer's outputs mixed
      by an n × n matrix (`_SpectralLinearGram`) when x has fewer rows than the weight's long
      side, x and the weight share a float dtype, and neither transforms nor autocast run;
    - GRAM otherwise: one eigendecomposition (`_SpectralBjorckGram`, or `_BjorckSpectrum` for
      `bjorck_orthonormalize`, which passes no `u`), scalar loops in C or NumPy.
    """
    rows = weight.shape[0] if weight.ndim else 0
    if (
        rows == 0
        or weight.numel() == 0
        or not native.allows("numpy")
        or weight.device.type != "cpu"
        or traced(weight)
        or (u is not None and traced(u))
        or min(rows, weight.numel() // rows) > GRAM_FORM_MAX_SIDE
    ):
        return REFERENCE
    if u is None:
        return GRAM
    small = _small_fits(weight, u)
    transforms = functorch_transforms_active()
    if (
        x is not None
        and not small
        and not transforms
        and weight.ndim == 2
        and x.dtype == weight.dtype
        and x.dtype in _FLOATS
        and x.ndim >= 1
        and x.numel() < x.shape[-1] * max(weight.shape)
        and not traced(x)
        and not autocast_enabled("cpu")
    ):
        return FACTORED
    return SMALL if small and not transforms else GRAM


def _small_fits(weight: torch.Tensor, u: torch.Tensor, grad: torch.Tensor | None = None) -> bool:
    """Whether the C loops can take the whole map of `weight` (as (shape[0], rest)) or its
    gradient: the kernel built and allowed, a small weight, float32/float64 data."""
    size = weight.numel()
    if weight.ndim < 1 or size == 0:
        return False
    rows = weight.shape[0]
    return (
        _kernel() is not None
        and min(rows, size // rows) <= SMALL_MAX_SIDE
        and size <= SMALL_MAX_SIZE
        and weight.dtype in _FLOATS
        and u.dtype in _FLOATS
        and (grad is None or grad.dtype in _FLOATS)
    )


def _kernel() -> ModuleType | None:
    """The C loops of `_spectral.c` when built and allowed (`native.limited_to`), else None:
    the accelerator of the eigenvalue forms' scalar loops, whose fallback is NumPy."""
    return native.spectral() if native.allows("c") else None


@torch.no_grad()
def power_iteration(
    w: torch.Tensor, u: torch.Tensor, eps: float = 1e-3, max_iter: int = 10
) -> tuple[torch.Tensor, torch.Tensor]:
    """Leading singular vectors (u, v) of the matrix `w` (out, k), warm-started from `u`.

    Stops when the update of `u` is smaller than `eps` in L2 norm, as deel-lip does.
    """
    wt = w.t()
    for _ in range(max(max_iter, 1)):
        v = _unit(wt @ u)
        new_u = _unit(w @ v)
        delta = float(torch.linalg.vector_norm(new_u - u))
        u = new_u
        if delta < eps:
            break
    return u, v


def _unit(x: torch.Tensor) -> torch.Tensor:
    """F.normalize(x, dim=0) for a vector, in two ops instead of four (this loop is op-bound)."""
    return x / torch.linalg.vector_norm(x).clamp_min(1e-12)


# Largest short side for the eigenvalue forms: past it, the eigendecomposition and the n×n
# divided differences cost more than the iterations' products (measured on 2 CPU threads:
# 64×64 to 96×864 1.4-2× faster fused, 128×128 and 128×1152 1.5× slower).
GRAM_FORM_MAX_SIDE = 96


def spectral_bjorck(
    weight: torch.Tensor,
    u: torch.Tensor,
    eps_spectral: float = 1e-3,
    eps_bjorck: float = 1e-3,
    beta: float = 0.5,
    max_power_iter: int = 10,
    max_bjorck_iter: int = 15,
) -> tuple[torch.Tensor, torch.Tensor]:
    """deel-lip's constrained weight of the matrix `weight` (out, k) and the updated vector u.

    Power iteration from `u` gives σ = uᵀ·weight·v (differentiable in `weight`, u and v held
    fixed, as in deel-lip); the result is Björck(weight / (σ + eps_spectral)). A convolution
    kernel (out, in, kh, kw) is taken as the matrix (out, in·kh·kw), as deel-lip reshapes it,
    and the result has the kernel's shape.
    """
    settings = (eps_spectral, eps_bjorck, beta, max_power_iter, max_bjorck_iter)
    path = _path(weight, u)
    if path == SMALL:
        return apply_function(_SmallSpectral, weight, u, settings)
    if weight.ndim != 2:
        out, new_u = spectral_bjorck(weight.reshape(weight.shape[0], -1), u, *settings)
        return out.reshape(weight.shape), new_u
    if path == GRAM:
        out, new_u, *_ = apply_function(_SpectralBjorckGram, weight, u, *settings)
        return out, new_u
    new_u, v = power_iteration(weight.detach(), u, eps_spectral, max_power_iter)
    sigma = torch.dot(new_u, weight @ v)
    w = weight / (sigma + eps_spectral)
    return bjorck_orthonormalize(w, eps_bjorck, beta, max_bjorck_iter), new_u


def bjorck_orthonormalize(
    w: torch.Tensor, eps: float = 1e-3, beta: float = 0.5, max_iter: int = 15
) -> torch.Tensor:
    """Björck iterations w <- (1 + beta) w - beta w wᵀ w, as in deel-lip.

    Stops when the Frobenius norm of the update is below `eps`. With beta = 0.5 and an input of
    spectral norm <= 2, each iteration maps every singular value s to 1.5 s - 0.5 s³ <= 1.

    On CPU, a matrix whose short side is at most `GRAM_FORM_MAX_SIDE` takes the spectral form
    of the same iterations (`_bjorck_gram`), faster forward and backward; otherwise the
    iterations run as written.
    """
    if _path(w, None) == GRAM:
        return _bjorck_gram(w, eps, beta, max_iter)
    return _bjorck_direct(w, eps, beta, max_iter)


def _bjorck_direct(w: torch.Tensor, eps: float, beta: float, max_iter: int) -> torch.Tensor:
    rows, cols = w.shape
    for _ in range(max_iter):
        if rows <= cols:
            new_w = (1 + beta) * w - beta * (w @ w.t()) @ w
        else:
            new_w = (1 + beta) * w - beta * w @ (w.t() @ w)
        delta = torch.linalg.matrix_norm((new_w - w).detach())
        w = new_w
        if delta < eps:
            break
    return w


def _bjorck_gram(w: torch.Tensor, eps: float, beta: float, max_iter: int) -> torch.Tensor:
    """The same iterates as `_bjorck_direct`, computed on the eigenvalues of the short side.

    Every iterate is A·w₀ with A = p(G) a polynomial in the Gram matrix G = w₀w₀ᵀ (n×n, n the
    short side), and p acts on each eigenvalue λ of G by the scalar iteration
    a ← (1 + beta)·a − beta·a³·λ from a = 1 (the singular value s = √λ becomes s·a). The
    stopping rule's ‖(A' − A)w₀‖²_F is Σ (a' − a)²·λ. So one symmetric eigendecomposition
    replaces every n×n product, and the long side is touched twice (for G and for A·w₀). G and A
    are in float64: A's entries grow on small singular values and float32 rounding would leak
    into the top singular value. The result is cast back to w's dtype.
    """
    transpose = w.shape[0] > w.shape[1]
    w0 = (w.t() if transpose else w).double()  # wᵀ follows the same iteration on its rows
    a = apply_function(_BjorckSpectrum, w0 @ w0.t(), eps, beta, max_iter)[0]
    out = (a @ w0).to(w.dtype)
    return out.t() if transpose else out


def _bjorck_multipliers(
    lam: np.ndarray, eps: float, beta: float, max_iter: int
) -> tuple[np.ndarray, np.ndarray]:
    """Björck's scalar iteration on the Gram eigenvalues `lam` (ascending, ≥ 0).

    Returns the multipliers a = p(λ) (singular value s becomes s·a) and the matrix of divided
    differences D_ij = (p(λᵢ) − p(λⱼ)) / (λᵢ − λⱼ) (p′(λᵢ) on ties) that the derivative needs.
    D is carried through the iterations by the product rule for divided differences, written
    so that the larger a multiplies the smaller λ: that form damps rounding errors instead of
    amplifying them.
    """
    n = lam.shape[0]
    index = np.arange(n)
    upper = np.maximum(index[:, None], index[None, :])  # the larger λ of each pair
    lower = np.minimum(lam[:, None], lam[None, :])
    a = np.ones(n)
    diff = np.zeros((n, n))
    for _ in range(max(max_iter, 1)):
        cube = a**3
        ai, aj = a[:, None], a[None, :]
        diff = (1 + beta) * diff - beta * (
            diff * (ai * ai + ai * aj + aj * aj) * lower + cube[upper]
        )
        new_a = (1 + beta) * a - beta * cube * lam
        delta_sq = float(((new_a - a) ** 2 * lam).sum())
        a = new_a
        if delta_sq < eps * eps:
            break
    return a, diff


def _eigh(gram: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (ascending, clamped at 0) and eigenvectors of a float64 Gram matrix.

    Matrix products stay in torch: NumPy's own BLAS threads would compete with torch's.
    """
    lam, q = torch.linalg.eigh(gram)
    return lam.clamp_min(0), q


def _multipliers(lam: torch.Tensor, eps: float, beta: float, max_iter: int) -> tuple:
    """`_bjorck_multipliers` on a float64 tensor, in C when built: (a, diff) tensors."""
    n = lam.shape[0]
    kernel = _kernel()
    if kernel is None:
        a, diff = _bjorck_multipliers(lam.numpy(), eps, beta, max_iter)
        return torch.from_numpy(a), torch.from_numpy(diff)
    a, diff = lam.new_empty(n), lam.new_empty(n, n)
    kernel.bjorck_multipliers(
        lam.contiguous().data_ptr(), n, eps, beta, max_iter, a.data_ptr(), diff.data_ptr()
    )
    return a, diff


def _spectral_scalars(
    lam: torch.Tensor, proj: torch.Tensor, transposed: bool, uu: float, settings: tuple
) -> tuple:
    """The scalar part of `_SpectralBjorckGram.forward`, in C when built, else in NumPy.

    From the eigenvalues `lam` (float64, ascending, ≥ 0) and u₀'s coordinates `proj` (divided
    by s when `transposed`), with uu = u₀·u₀: (σ + eps, the new u's coordinates (divided by s
    when transposed), the previous power iterate, v's coordinates, μ = λ/(σ + eps)², Björck's
    multipliers a and their divided differences), all float64 tensors but the first.
    `settings` = (eps_spectral, eps_bjorck, beta, max_power_iter, max_bjorck_iter).
    """
    n = lam.shape[0]
    kernel = _kernel()
    if kernel is not None:
        out = lam.new_empty(5 * n + n * n)
        lam, proj = lam.contiguous(), proj.contiguous()
        scale = kernel.spectral_scalars(
            lam.data_ptr(), proj.data_ptr(), n, transposed, uu, *settings, out.data_ptr()
        )
        *vectors, diff = out.split([n] * 5 + [n * n])
        return (scale, *vectors, diff.view(n, n))
    scale, *arrays = _scalars_numpy(lam.numpy(), proj.numpy(), transposed, uu, settings)
    return (scale, *(torch.from_numpy(x) for x in arrays))


def _scalars_numpy(
    lam: np.ndarray, proj: np.ndarray, transposed: bool, uu: float, settings: tuple
) -> tuple:
    """`_spectral_scalars` in NumPy (the reference the C loops of _spectral.c follow)."""
    eps_spectral, eps_bjorck, beta, max_power_iter, max_bjorck_iter = settings
    s = np.sqrt(lam)
    coords = np.divide(proj, s, out=np.zeros_like(proj), where=s > 0) if transposed else proj
    outside = max(uu - float((coords * coords).sum()), 0.0)
    c = prev = coords
    for i in range(max(max_power_iter, 1)):
        prev, c = c, _np_unit(lam * c)
        if float(((c - prev) ** 2).sum()) + (outside if i == 0 else 0.0) < eps_spectral**2:
            break
    v_coords = _np_unit(s * prev)
    scale = float((c * s * v_coords).sum()) + eps_spectral  # σ + eps
    u_coords = np.divide(c, s, out=np.zeros_like(c), where=s > 0) if transposed else c
    mu = lam / scale**2
    a, diff = _bjorck_multipliers(mu, eps_bjorck, beta, max_bjorck_iter)
    return scale, u_coords, prev, v_coords, mu, a, diff


def _spectral_derivative(q: torch.Tensor, diff: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Derivative of G ↦ p(G) applied to a symmetric direction d: Q (D ∘ (Qᵀ d Q)) Qᵀ."""
    return q @ (diff * (q.t() @ d @ q)) @ q.t()


class _GramState(NamedTuple):
    """What one eigendecomposition of the short side's Gram gives `_SpectralBjorckGram` (float64
    tensors): S (the short side, n × m), p = Q diag(a) Qᵀ, Q, the divided differences, μ, σ + eps,
    the new power vector u (u's dtype), v, and the largest Björck multiplier (a singular value s
    of S/(σ + eps) becomes s·a)."""

    transposed: bool
    short: torch.Tensor
    p: torch.Tensor
    q: torch.Tensor
    diff: torch.Tensor
    mu: torch.Tensor
    scale: float
    new_u: torch.Tensor
    v: torch.Tensor
    a_max: float


def _gram_state(
    weight: torch.Tensor, u0: torch.Tensor, settings: tuple, exact: bool = True
) -> _GramState:
    """The forward of `_SpectralBjorckGram` up to its last product (see its docstring).

    With `exact`, the Gram matrix and the products with the long side are float64. Without it,
    they stay in the weight's dtype (`short` is then that of the weight), and only the
    eigendecomposition and the n × n part are float64: for a training step whose Björck
    multipliers stay small (`_SpectralLinearGram`), where float32 rounding of the Gram moves
    the result no more than the float32 rounding of the formed weight.
    """
    transposed = weight.shape[0] > weight.shape[1]
    w = weight.detach()
    if exact:
        w = w.double()
    short = w.t() if transposed else w
    lam, q = _eigh((short @ short.t()).double())
    u64 = u0.detach().double()
    # u₀ in the eigenbasis; when transposed, U = W·V/s and the division by s is done below
    proj = q.t() @ (short @ u0.detach().to(w.dtype)).double() if transposed else q.t() @ u64
    scale, u_coords, prev, v_coords, mu, a, diff = _spectral_scalars(
        lam, proj, transposed, float(u64.dot(u64)), settings
    )
    if transposed:
        new_u = short.t() @ (q @ u_coords).to(w.dtype)
        v = q @ v_coords
    else:
        new_u = q @ u_coords
        v = _unit((short.t() @ (q @ prev).to(w.dtype)).double())
    p = (q * a) @ q.t()
    state = (transposed, short, p, q, diff, mu, scale, new_u.to(u0.dtype), v, float(a.max()))
    return _GramState(*state)


def _gram_backward(
    dp: torch.Tensor,
    q: torch.Tensor,
    diff: torch.Tensor,
    p: torch.Tensor,
    mu: torch.Tensor,
    scale: float,
) -> tuple[torch.Tensor, float]:
    """The n × n part of `_SpectralBjorckGram.backward` from dp = g·Sᵀ/(σ+eps) (float64): the
    Gram's gradient term 2·dG/(σ+eps)², which multiplies S, and ⟨dS', S'⟩ (the σ term)."""
    inner = diff * (q.t() @ ((dp + dp.t()) / 2) @ q)
    d_gram = q @ inner @ q.t()
    # ⟨g, result⟩ = ⟨p, dp⟩: an n×n sum instead of one over the whole weight
    dot = float((p * dp).sum() + 2 * (mu * inner.diagonal()).sum())
    return d_gram * (2 / scale**2), dot


def _formed_weight_grad(
    grad: torch.Tensor,
    weight: torch.Tensor,
    transposed: bool,
    q: torch.Tensor,
    diff: torch.Tensor,
    p: torch.Tensor,
    mu: torch.Tensor,
    scale: float,
    u: torch.Tensor,
    v: torch.Tensor,
) -> torch.Tensor:
    """The weight's gradient from `grad`, the gradient of the formed constrained weight (see
    `_SpectralBjorckGram`), in grad's dtype."""
    dtype = grad.dtype
    short, g = (weight.t(), grad.t()) if transposed else (weight, grad)
    d_gram, dot = _gram_backward((g @ short.t()).double() / scale, q, diff, p, mu, scale)
    # dS'/(σ+eps) = p·g/(σ+eps) + 2·dG·S/(σ+eps)²
    d_short = torch.addmm(d_gram.to(dtype) @ short, (p / scale).to(dtype), g)
    d_weight = d_short.t() if transposed else d_short
    return torch.addr(d_weight, u.to(dtype), v.to(dtype), alpha=-dot / scale)


def _result_tangent(
    weight: torch.Tensor,
    tangent: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    q: torch.Tensor,
    diff: torch.Tensor,
    p: torch.Tensor,
    scale: float,
    transposed: bool,
) -> torch.Tensor:
    """Forward-mode derivative of the constrained weight along `tangent` (in its dtype)."""
    t64, w64 = tangent.double(), weight.double()
    d_scale = float(u @ t64 @ v)
    short, d = (w64.t(), t64.t()) if transposed else (w64, t64)
    normed = short / scale
    d_normed = d / scale - normed * (d_scale / scale)
    cross = d_normed @ normed.t()
    dp = _spectral_derivative(q, diff, cross + cross.t())
    d_result = (dp @ normed + p @ d_normed).to(tangent.dtype)
    return d_result.t() if transposed else d_result


class _BjorckSpectrum(torch.autograd.Function):
    """G ↦ A = p(G) for the Björck polynomial p of `_bjorck_multipliers`, with its derivative.

    The derivative of a spectral function is Q (D ∘ (Qᵀ dG Q)) Qᵀ, with D the divided differences
    of p at the eigenvalues, so equal eigenvalues (an orthogonal kernel) are no special case.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(
        gram: torch.Tensor, eps: float, beta: float, max_iter: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        lam, q = _eigh(gram)
        a, diff = _multipliers(lam, eps, beta, max_iter)
        return (q * a) @ q.t(), q, diff

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        _, q, diff = output
        ctx.mark_non_differentiable(q, diff)
        ctx.save_for_backward(q, diff)
        ctx.save_for_forward(q, diff)

    @staticmethod
    @once_differentiable  # second derivatives would miss Q's and D's: refuse them
    def backward(ctx, grad: torch.Tensor, *_: torch.Tensor) -> tuple:
        q, diff = ctx.saved_tensors
        return _spectral_derivative(q, diff, (grad + grad.t()) / 2), None, None, None

    @staticmethod
    def jvp(ctx, tangent: torch.Tensor, *_: object) -> tuple:
        q, diff = ctx.saved_tensors
        return _spectral_derivative(q, diff, tangent), None, None


def _np_unit(x: np.ndarray) -> np.ndarray:
    return x / max(math.sqrt(float((x * x).sum())), 1e-12)  # as `_unit`, without BLAS


class _SpectralBjorckGram(torch.autograd.Function):
    """`spectral_bjorck` from one eigendecomposition of the short side's Gram, exact derivative.

    Write W (out × k) on its short side: S = W (out ≤ k) or Wᵀ, n × m with n ≤ m, and
    SSᵀ = Q diag(λ) Qᵀ, s = √λ. Power iteration's u (length out) lives on the left singular
    vectors U of W, with coordinates c: u_j = unit(WWᵀu_{j−1}) is c_j = unit(λ ∘ c_{j−1}), and
    whatever of u₀ lies outside U's span (only when out > k) is removed by the first step,
    which the first stopping test counts. v_k = unit(Wᵀu_{k−1}) = V unit(s ∘ c_{k−1}), so
    σ = u_kᵀWv_k = Σ c_k·s·unit(s ∘ c_{k−1}). Björck then runs on the eigenvalues λ/(σ+eps)² of
    the same Q (`_bjorck_multipliers`), and the result is p·S/(σ+eps) with p = Q diag(a) Qᵀ.

    Backward, with S' = S/(σ+eps) and g the gradient of the result (on the short side):
    dp = gS'ᵀ, dG = Q (D ∘ (Qᵀ sym(dp) Q)) Qᵀ, dS' = p g + 2 dG S', and through σ+eps (u, v
    held fixed, as deel-lip's σ = u·Wv): dW = dS'/(σ+eps) − ⟨dS', S'⟩/(σ+eps)·u vᵀ, where
    ⟨dS', S'⟩ = ⟨g, result⟩ + 2 Σᵢ μᵢ (D ∘ (Qᵀ sym(dp) Q))ᵢᵢ. The forward products are float64
    (p's entries grow on small singular values, and rounding there would leak into the top
    singular value); the backward ones are in the gradient's dtype, whose rounding only
    perturbs the gradient.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(
        weight: torch.Tensor,
        u0: torch.Tensor,
        eps_spectral: float,
        eps_bjorck: float,
        beta: float,
        max_power_iter: int,
        max_bjorck_iter: int,
    ) -> tuple[torch.Tensor, ...]:
        settings = (eps_spectral, eps_bjorck, beta, max_power_iter, max_bjorck_iter)
        if _small_fits(weight, u0):
            result, new_u, state, scale = _small_forward(weight.detach(), u0.detach(), settings)
            views = _state_views(state, *weight.shape)
            return (result, new_u, *views, torch.tensor(scale, dtype=torch.float64))
        g = _gram_state(weight, u0, settings)
        result = ((g.p / g.scale) @ g.short).to(weight.dtype)
        return (
            result.t() if g.transposed else result,
            g.new_u,
            g.v,
            g.q,
            g.diff,
            g.p,
            g.mu,
            torch.tensor(g.scale, dtype=torch.float64),
        )

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        weight = inputs[0]
        result, new_u, *rest = output
        ctx.mark_non_differentiable(new_u, *rest)
        ctx.set_materialize_grads(False)  # else autograd zero-fills 7 unused gradients
        ctx.save_for_backward(weight, result, new_u, *rest)
        ctx.save_for_forward(weight, result, new_u, *rest)

    @staticmethod
    def _unpack(ctx) -> tuple:
        weight, result, u, v, q, diff, p, mu, scale = ctx.saved_tensors
        transposed = weight.shape[0] > weight.shape[1]
        return weight, result, u.double(), v, q, diff, mu, float(scale), p, transposed

    @staticmethod
    @once_differentiable  # second derivatives would miss the Gram state's: refuse them
    def backward(ctx, grad: torch.Tensor | None, *_: torch.Tensor | None) -> tuple:
        if grad is None:
            return (None,) * 7
        saved = ctx.saved_tensors
        if _small_fits(saved[0], saved[2], grad):
            weight, _, u, *_, scale = saved
            state = torch.cat([t.flatten() for t in saved[3:8]])
            return (_small_backward(grad, weight, u, state, float(scale)), *(None,) * 6)
        weight, _, u, v, q, diff, mu, scale, p, transposed = _SpectralBjorckGram._unpack(ctx)
        d_weight = _formed_weight_grad(grad, weight, transposed, q, diff, p, mu, scale, u, v)
        return d_weight, None, None, None, None, None, None

    @staticmethod
    def jvp(ctx, tangent: torch.Tensor, *_: object) -> tuple:
        weight, _, u, v, q, diff, _, scale, p, transposed = _SpectralBjorckGram._unpack(ctx)
        d_result = _result_tangent(weight, tangent, u, v, q, diff, p, scale, transposed)
        return (d_result, *(None,) * 7)  # one per output: result, u, v, Q, D, p, μ, σ


_FLOATS = (torch.float32, torch.float64)


def factored_linear_applies(x: torch.Tensor, weight: torch.Tensor, u: torch.Tensor) -> bool:
    """Whether `spectral_bjorck_linear` mixes the outputs of y = x·Wᵀ by an n × n matrix instead
    of forming the constrained weight (`_path`'s FACTORED)."""
    return _path(weight, u, x) == FACTORED


def spectral_bjorck_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    u: torch.Tensor,
    eps_spectral: float = 1e-3,
    eps_bjorck: float = 1e-3,
    beta: float = 0.5,
    max_power_iter: int = 10,
    max_bjorck_iter: int = 15,
) -> tuple[torch.Tensor, torch.Tensor]:
    """F.linear(x, spectral_bjorck(weight, u)[0], bias) and the updated u, for the training step
    of a dense layer: the same map without forming the constrained weight (see
    `_SpectralLinearGram`), where `factored_linear_applies`; else by forming it."""
    settings = (eps_spectral, eps_bjorck, beta, max_power_iter, max_bjorck_iter)
    if not factored_linear_applies(x, weight, u):
        with full_precision(weight.device.type):
            w, new_u = spectral_bjorck(weight, u, *settings)
        return torch.nn.functional.linear(x, w, bias), new_u
    rows = x.reshape(-1, x.shape[-1])
    y, new_u = apply_function(_SpectralLinearGram, rows, weight, bias, u, settings)
    return y.view(*x.shape[:-1], y.shape[-1]), new_u


# Largest Björck multiplier at which `_SpectralLinearGram` mixes by P: float32 rounding of x·Wᵀ
# is amplified by up to the largest multiplier, against none when the weight is formed.
# Training keeps it near 1 (1.0-1.3 over 2 epochs of two seed_table settings on Fashion-MNIST);
# above, the weight is formed.
FACTORED_MAX_MULTIPLIER = 4.0


class _SpectralLinearGram(torch.autograd.Function):
    """y = x·Rᵀ + b for the constrained weight R = p·S/(σ+eps) of `_SpectralBjorckGram`, with
    R not formed: as p is n × n and symmetric, y = (x·Wᵀ)·P + b when W is short-side first
    (S = W), or y = (x·P)·Wᵀ + b when S = Wᵀ, with P = p/(σ+eps).

    For a batch of B rows and a short side n ≪ long side m, this replaces the n²·m products that
    form R, and the three that its backward takes, by B·n² ones and one n²·m product (2·dG·S):
    the layer's own products (x·Wᵀ, and dy·W, dyᵀ·x for the gradients) are the unconstrained
    layer's. Backward, with z the intermediate (x·Wᵀ or x·P): dp = dyᵀ·z/(σ+eps) (or xᵀ·dz), the
    Gram's term and the σ term as `_SpectralBjorckGram.backward`.

    The mixing by P runs in x's dtype, so the rounding of z is amplified by up to the largest
    Björck multiplier (those of small singular values grow to 1.5^15): above
    `FACTORED_MAX_MULTIPLIER`, the step forms R in float64 as `_SpectralBjorckGram` does. Below
    it, the singular values of S/(σ+eps) lie within a factor ~4 of each other, and the Gram
    matrix is taken in the weight's dtype as well (`_gram_state(exact=False)`): its rounding
    moves the result no more than the rounding of the formed weight does (tested). The weight
    that eval mode, bounds and certificates use is always formed in float64. A backward that
    autograd records (create_graph) forms the weight again (`_SpectralBjorckGram`, from the same
    u₀), so input gradients depend on the weight as they do through the formed weight.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, u0, settings):
        g = _gram_state(weight, u0, settings, exact=False)
        ctx.formed = g.a_max > FACTORED_MAX_MULTIPLIER
        if ctx.formed and g.short.dtype != torch.float64:
            g = _gram_state(weight, u0, settings)  # small singular values: the exact Gram
        factor = (g.p / g.scale).to(x.dtype)
        if ctx.formed:
            z = ((g.p / g.scale) @ g.short).to(weight.dtype)  # z is R here, as formed
            z = z.t() if g.transposed else z
            y = torch.nn.functional.linear(x, z, bias)
        elif g.transposed:
            z = x @ factor
            y = torch.nn.functional.linear(z, weight, bias)
        else:
            z = x @ weight.t()
            y = z @ factor if bias is None else torch.addmm(bias, z, factor)
        ctx.save_for_backward(x, weight, z)
        ctx.save_for_forward(x, weight, z)
        ctx.state = (g.transposed, factor, g.q, g.diff, g.p, g.mu, g.scale, g.new_u, g.v)
        ctx.formed_from = (u0.clone(), *settings)  # the layer updates its u in place
        ctx.has_bias = bias is not None
        ctx.mark_non_differentiable(g.new_u)
        ctx.set_materialize_grads(False)
        return y, g.new_u

    @staticmethod
    def backward(ctx, dy, _):
        if dy is None:
            return None, None, None, None, None
        x, weight, z = ctx.saved_tensors
        transposed, factor, q, diff, p, mu, scale, u, v = ctx.state
        if torch.is_grad_enabled():  # create_graph: the gradients as the formed weight gives them
            formed = apply_function(_SpectralBjorckGram, weight, *ctx.formed_from)[0]
            y = torch.nn.functional.linear(x, formed)
            wanted = [t for t in (x, weight) if t.requires_grad]
            grads = iter(torch.autograd.grad(y, wanted, dy, create_graph=True))
            dx, d_weight = (next(grads) if t.requires_grad else None for t in (x, weight))
            d_bias = dy.sum(0) if ctx.has_bias else None
            return dx, d_weight, d_bias, None, None
        dtype = dy.dtype
        if ctx.formed:
            dx = dy @ z if ctx.needs_input_grad[0] else None
            state = (q, diff, p, mu, scale, u.double(), v)
            d_weight = _formed_weight_grad(dy.t() @ x, weight, transposed, *state)
        else:
            if transposed:
                dz = dy @ weight
                dx = dz @ factor if ctx.needs_input_grad[0] else None
                dp = (x.t() @ dz).double() / scale
            else:
                dz = dy @ factor
                dx = dz @ weight if ctx.needs_input_grad[0] else None
                dp = (dy.t() @ z).double() / scale
            d_gram, dot = _gram_backward(dp, q, diff, p, mu, scale)
            if transposed:
                d_weight = torch.addmm(weight @ d_gram.to(dtype), dy.t(), z)
            else:
                d_weight = torch.addmm(d_gram.to(dtype) @ weight, dz.t(), x)
            d_weight.addr_(u.to(dtype), v.to(dtype), alpha=-dot / scale)
        d_bias = dy.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return dx, d_weight, d_bias, None, None

    @staticmethod
    def jvp(ctx, x_t, weight_t, bias_t, *_):
        x, weight, z = ctx.saved_tensors
        transposed, factor, q, diff, p, _, scale, u, v = ctx.state
        y_t = None
        if x_t is not None:
            if ctx.formed:
                y_t = x_t @ z.t()
            else:
                w = factor @ (weight.t() if transposed else weight)  # Rᵀ or R
                y_t = x_t @ (w if transposed else w.t())
        if weight_t is not None:
            d_result = _result_tangent(
                weight, weight_t, u.double(), v, q, diff, p, scale, transposed
            )
            term = x @ d_result.t()
            y_t = term if y_t is None else y_t + term
        if bias_t is not None:
            y_t = bias_t.expand(x.shape[0], -1) if y_t is None else y_t + bias_t
        return y_t, None


def _dense(t: torch.Tensor) -> torch.Tensor:
    return t if t.is_contiguous() else t.contiguous()


def _small_forward(
    weight: torch.Tensor, u0: torch.Tensor, settings: tuple
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """The map of a small weight by `_spectral.spectral_forward`: (result, new u, state, σ + eps).

    `weight` may have any shape: its C-order data is taken as (shape[0], rest), and the result
    has its shape. `state` (float64) holds what the backward reads: v, Q, the divided
    differences, p and μ, laid out as `_state_views` splits them. The eigendecomposition of the
    short side's Gram matrix is torch's (`torch.linalg.eigh`, LAPACK); the C loops do the rest.
    """
    rows = weight.shape[0]
    cols = weight.numel() // rows
    w, u = _dense(weight), _dense(u0)
    short = w.view(rows, cols).double()
    lam, q = _eigh(short @ short.t() if rows <= cols else short.t() @ short)
    result, new_u = torch.empty_like(w), torch.empty_like(u)
    state = torch.empty(sum(_state_sizes(rows, cols)), dtype=torch.float64)
    n = lam.shape[0]
    state[cols : cols + n * n].view(n, n).copy_(q)  # Q row-major, where the backward reads it
    v, q_at, diff, p, mu = _state_pointers(state, rows, cols)
    scale = _kernel().spectral_forward(
        lam.data_ptr(), q_at, w.data_ptr(), w.dtype == torch.float64, rows, cols, u.data_ptr(),
        u.dtype == torch.float64, *settings, result.data_ptr(), new_u.data_ptr(),
        v, diff, p, mu,
    )  # fmt: skip
    return result, new_u, state, scale


def _state_sizes(rows: int, cols: int) -> list[int]:
    """Lengths of v, Q, the divided differences, p and μ, in that order, in a `_small_forward`
    state (float64, one buffer)."""
    n = min(rows, cols)
    return [cols, n * n, n * n, n * n, n]


def _state_views(state: torch.Tensor, rows: int, cols: int) -> tuple[torch.Tensor, ...]:
    """(v, Q, divided differences, p, μ) of a `_small_forward` state."""
    v, q, diff, p, mu = state.split(_state_sizes(rows, cols))
    n = mu.shape[0]
    return v, q.view(n, n), diff.view(n, n), p.view(n, n), mu


def _state_pointers(state: torch.Tensor, rows: int, cols: int) -> tuple[int, ...]:
    """Addresses of v, Q, the divided differences, p and μ in a `_small_forward` state (no
    views: this runs at every training step)."""
    address, size = state.data_ptr(), state.element_size()
    offsets = itertools.accumulate(_state_sizes(rows, cols)[:-1], initial=0)
    return tuple(address + size * k for k in offsets)


def _small_backward(
    grad: torch.Tensor, weight: torch.Tensor, u: torch.Tensor, state: torch.Tensor, scale: float
) -> torch.Tensor:
    """The weight's gradient by `_spectral.spectral_backward`, from the gradient of the result,
    the new u and the state of `_small_forward` (shapes as `_small_forward` takes them)."""
    g, w = _dense(grad), _dense(weight.detach())
    rows = w.shape[0]
    cols = w.numel() // rows
    d_weight = torch.empty_like(g)
    v, q, diff, p, mu = _state_pointers(state, rows, cols)
    _kernel().spectral_backward(
        g.data_ptr(), g.dtype == torch.float64, w.data_ptr(), w.dtype == torch.float64,
        rows, cols, u.data_ptr(), u.dtype == torch.float64, v, q, diff, p, mu, scale,
        d_weight.data_ptr(),
    )  # fmt: skip
    return d_weight


class _SmallSpectral(torch.autograd.Function):
    """`_SpectralBjorckGram` for a small weight of any shape, wholly in `_spectral.c`.

    The same values and derivatives, with the bookkeeping a training step pays for each layer
    cut down: two outputs instead of eight, one float64 state buffer kept on ctx, and the
    weight's own shape (a convolution kernel needs no reshape). Not for torch.func transforms,
    which take `_SpectralBjorckGram` and its vmap rule.
    """

    @staticmethod
    def forward(ctx, weight, u0, settings):
        result, new_u, state, scale = _small_forward(weight, u0, settings)
        ctx.save_for_backward(weight)
        ctx.save_for_forward(weight)
        ctx.small = (new_u, state, scale)
        ctx.mark_non_differentiable(new_u)
        ctx.set_materialize_grads(False)
        return result, new_u

    @staticmethod
    @once_differentiable  # second derivatives would miss the state's: refuse them
    def backward(ctx, grad, _):
        if grad is None:
            return None, None, None
        (weight,) = ctx.saved_tensors
        if grad.dtype not in _FLOATS:
            grad = grad.to(weight.dtype)
        return _small_backward(grad, weight, *ctx.small), None, None

    @staticmethod
    def jvp(ctx, weight_t, *_):
        (weight,) = ctx.saved_tensors
        new_u, state, scale = ctx.small
        rows = weight.shape[0]
        cols = weight.numel() // rows
        v, q, diff, p, _ = _state_views(state, rows, cols)
        w2, t2 = weight.reshape(rows, cols), weight_t.reshape(rows, cols)
        d_result = _result_tangent(w2, t2, new_u.double(), v, q, diff, p, scale, rows > cols)
        return d_result.view(weight.shape), None
