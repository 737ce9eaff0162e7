"""Weight re-parametrizations that make a linear or convolutional layer at most 1-Lipschitz.

Each class is a `torch.nn.utils.parametrize` module: registered on a standard `nn.Linear` or
`nn.Conv2d`, it maps the free parameter to the constrained weight the layer uses. In training
mode the constrained weight is recomputed once per forward (one training step); in eval mode
it is computed once, without autograd, and cached until the content of the parameter or of a
buffer it was computed from changes (by any write, `.data` and NumPy included); a backward pass
through the cache still reaches the parameter (`_EvalWeight`). Under autocast
it is still computed in the parameter's dtype, and autocast casts it for the layer's own op.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from ._torch_private import functorch_transforms_active
from .bjorck import spectral_bjorck, spectral_bjorck_linear
from .operator_norm import REL_SLACK, TrackedConvNorm, gram_iteration_norm, tap_drift
from .tracing import apply_function, full_precision, traced

__all__ = ["AOL_SIDES", "AOLRescale", "CachedParametrization", "SpectralBjorck"]


class CachedParametrization(nn.Module):
    """Base class: subclasses implement `compute(weight)`; eval mode caches its result.

    The cache is rebuilt whenever the weight or a buffer it was computed from differs in
    content (compared exactly: writes through `.data` or NumPy bump no version counter), or the
    subclass's `cache_settings()` differ. With autograd on, the cached weight is returned
    through `_EvalWeight`, whose backward pass recomputes `compute` with autograd: an optimizer
    step taken in eval mode trains the weight, and attacks that only differentiate the input
    cost nothing extra.
    """

    def __init__(self) -> None:
        super().__init__()
        self._cache: torch.Tensor | None = None
        self._cache_key: tuple | None = None
        self._cache_inputs: tuple[torch.Tensor, ...] = ()

    def compute(self, weight: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def cache_settings(self) -> tuple:
        """The plain attributes `compute` reads besides its weight and buffers."""
        return ()

    def _inputs(self, weight: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (weight, *self.buffers(recurse=False))

    def _cache_valid(self, weight: torch.Tensor, key: tuple) -> bool:
        if self._cache is None or self._cache_key != key:
            return False
        if self._cache.is_inference() and not torch.is_inference_mode_enabled():
            return False  # autograd cannot save an inference tensor
        now = self._inputs(weight)
        return len(now) == len(self._cache_inputs) and all(
            a.shape == b.shape and a.dtype == b.dtype and a.device == b.device and torch.equal(a, b)
            for a, b in zip(now, self._cache_inputs, strict=True)
        )

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if self.training or traced(weight):
            self._cache = None
            with full_precision(weight.device.type):
                return self.compute(weight)
        key = (self.cache_settings(), weight.dtype, weight.device)
        if not self._cache_valid(weight, key):
            self._cache_inputs = tuple(t.detach().clone() for t in self._inputs(weight))
            with torch.no_grad(), full_precision(weight.device.type):
                self._cache = self.compute(weight)
            self._cache_key = key
        if torch.is_grad_enabled() and weight.requires_grad and not functorch_transforms_active():
            return _EvalWeight.apply(weight, self._cache, self)
        return self._cache

    def train(self, mode: bool = True) -> CachedParametrization:
        self._cache = None
        self._cache_inputs = ()
        return super().train(mode)


class _EvalWeight(torch.autograd.Function):
    """The cached eval-mode weight, differentiable in the weight it was computed from: the
    forward pass returns the cache; the backward pass recomputes `compute` (in eval mode, with
    autograd) and differentiates it. Runs only where autograd asks for the weight's gradient."""

    @staticmethod
    def forward(
        ctx, weight: torch.Tensor, cached: torch.Tensor, param: CachedParametrization
    ) -> torch.Tensor:
        ctx.save_for_backward(weight)
        ctx.param = param
        return cached.view_as(cached)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (weight,) = ctx.saved_tensors
        param = ctx.param
        training, param.training = param.training, False
        try:
            with torch.enable_grad(), full_precision(weight.device.type):
                w = weight.detach().requires_grad_()
                (d_weight,) = torch.autograd.grad(param.compute(w), w, grad)
        finally:
            param.training = training
        return d_weight, None, None


class SpectralBjorck(CachedParametrization):
    """deel-lip's reshaped kernel orthogonalization: power iteration, Björck, then a coefficient.

    The kernel is reshaped to (out, in·kh·kw); its largest singular value is estimated by power
    iteration with a persistent vector `u` (warm start across steps); the matrix is divided by
    (sigma + eps_spectral), orthonormalized by Björck iterations and multiplied by `coef` (the
    deel-lip correction for convolutions, 1 for dense layers).

    deel-lip's convolution coefficient is an average over border effects, not a worst case: with
    few input channels (a first layer on grey images) the convolution it gives reaches 1.024 at
    28×28. When `conv_geometry` is set (by `SpectralConv2d`), the coefficient is therefore capped
    at 1 / (exact norm of the convolution operator), computed from the orthonormalized kernel at
    every step without gradient, like deel-lip's own coefficient: the layer is then provably
    1-Lipschitz and equal to deel-lip's wherever deel-lip's coefficient is already sound.
    """

    def __init__(
        self,
        out_features: int,
        *,
        eps_spectral: float = 1e-3,
        eps_bjorck: float = 1e-3,
        beta: float = 0.5,
        max_power_iter: int = 10,
        max_bjorck_iter: int = 15,
        coef: float = 1.0,
    ) -> None:
        super().__init__()
        if eps_spectral <= 0:
            raise ValueError(f"eps_spectral must be > 0 (got {eps_spectral})")
        if eps_bjorck <= 0:
            raise ValueError(f"eps_bjorck must be > 0 (got {eps_bjorck})")
        if not 0 < beta <= 0.5:
            raise ValueError(f"beta must be in (0, 0.5] for Björck to converge (got {beta})")
        if max_power_iter < 1 or max_bjorck_iter < 1:
            raise ValueError(
                f"max_power_iter and max_bjorck_iter must be >= 1 "
                f"(got {max_power_iter}, {max_bjorck_iter})"
            )
        self.eps_spectral = eps_spectral
        self.eps_bjorck = eps_bjorck
        self.beta = beta
        self.max_power_iter = max_power_iter
        self.max_bjorck_iter = max_bjorck_iter
        self.register_buffer("u", F.normalize(torch.randn(out_features), dim=0))
        self.register_buffer("coef", torch.tensor(float(coef)))
        self.conv_geometry: dict | None = None
        self._norm_ref: tuple[torch.Tensor, float] | None = None
        self._exact_norm: TrackedConvNorm | None = None

    def settings(self) -> tuple[float, float, float, int, int]:
        """(eps_spectral, eps_bjorck, beta, max_power_iter, max_bjorck_iter)."""
        return (
            self.eps_spectral,
            self.eps_bjorck,
            self.beta,
            self.max_power_iter,
            self.max_bjorck_iter,
        )

    def cache_settings(self) -> tuple:
        return (self.settings(), self.conv_geometry)

    def compute(self, weight: torch.Tensor) -> torch.Tensor:
        kernel, u = spectral_bjorck(weight, self.u, *self.settings())
        if self.training:
            with torch.no_grad():
                self.u.copy_(u)
        coef = self.coef
        if self.conv_geometry is None and float(coef) == 1.0:
            return kernel  # a dense layer: no coefficient to apply
        if self.conv_geometry is not None:
            norm = self._operator_norm_if_binding(kernel.detach(), float(coef))
            if norm is not None:
                return kernel * (1.0 / norm)
        return kernel * coef

    def linear(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        """A training step's F.linear(x, self(weight), bias) for a dense weight, without forming
        the constrained weight where that pays (`spectral_bjorck_linear`); updates u once, as
        `compute` does."""
        if self.conv_geometry is not None or weight.ndim != 2 or float(self.coef) != 1.0:
            return F.linear(x, self(weight), bias)
        y, u = spectral_bjorck_linear(x, weight, bias, self.u, *self.settings())
        with torch.no_grad():
            self.u.copy_(u)
        return y

    @torch.no_grad()
    def _operator_norm_if_binding(self, kernel: torch.Tensor, coef: float) -> float | None:
        """Exact operator norm of `kernel` when coef·norm > 1 (the cap binds), else None.

        The exact norm (FFT + batched eigenvalues) is only recomputed when a cheap sound bound
        on ‖conv(K − K₀)‖ for the kernel K₀ of the last exact computation cannot rule the cap
        out (‖conv(K)‖ ≤ ‖conv(K₀)‖ + ‖conv(K − K₀)‖): first Σ_a ‖ΔK[:, :, a]‖_F (a
        convolution is a sum of shifted taps, each shift an isometry), then
        √(kh·kw)·‖ΔK as (out, in·kh·kw)‖₂ (each input pixel feeds at most kh·kw taps) by Gram
        iteration, then the frequency blocks' own bounds ‖K̂₀_f‖ + ‖ΔK̂_f‖_F from the reference
        kernel of `TrackedConvNorm`, which computes the exact norm, skipping the blocks that
        cannot hold the maximum, only when those fail. The result equals computing the exact
        norm from every block at every step.
        """
        ref = self._norm_ref
        at_most = None
        # When the cap bound at the last exact computation (coef·‖K₀‖ > 1), no bound of the form
        # coef·(‖K₀‖ + drift) can rule it out now: go straight to the exact norm.
        if (
            ref is not None
            and coef * ref[1] <= 1.0
            and ref[0].shape == kernel.shape
            and ref[0].device == kernel.device
        ):
            slack = 1 + REL_SLACK
            if coef * (ref[1] + tap_drift(kernel, ref[0]) * slack) <= 1.0:
                return None
            delta = (kernel - ref[0]).double()
            kh, kw = delta.shape[-2:]
            reshaped = math.sqrt(kh * kw) * gram_iteration_norm(delta.flatten(1)) * slack
            if coef * (ref[1] + reshaped) <= 1.0:
                return None
            at_most = 1.0 / coef  # the blocks' own bounds may still rule the cap out
        tracker = self._exact_norm
        if tracker is None or tracker.geometry != self.conv_geometry:
            tracker = self._exact_norm = TrackedConvNorm(**self.conv_geometry)
        norm = tracker(kernel, at_most)
        if norm is None:
            return None
        self._norm_ref = (kernel.clone(), norm)
        return norm if coef * norm > 1.0 else None

    def extra_repr(self) -> str:
        return (
            f"eps_spectral={self.eps_spectral}, eps_bjorck={self.eps_bjorck}, beta={self.beta}, "
            f"coef={float(self.coef):.4f}"
        )


class _AbsGramRowSums(torch.autograd.Function):
    """r_i = Σ_j |WᵀW|_ij, computed a block of rows of WᵀW at a time.

    WᵀW is (in × in): 67 MB for a 10×4096 dense head, only to be reduced to `in` numbers. Each
    block of rows is formed, used and dropped while it is still in cache, in the forward pass
    and again in the backward pass, which uses the symmetry of WᵀW: with S = sign(WᵀW) and
    c = ∂L/∂r, ∂L/∂W = W·(S ∘ (c_i + c_j)) = Σ_blocks W[:, rows]·(S ∘ (c_i + c_j))[rows, :].
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(weight: torch.Tensor) -> torch.Tensor:
        sums = weight.new_empty(weight.shape[1])
        for rows in _row_blocks(weight):
            gram = weight[:, rows].t() @ weight
            torch.linalg.vector_norm(gram, ord=1, dim=1, out=sums[rows])
        return sums

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        (weight,) = inputs
        ctx.save_for_backward(weight)
        ctx.save_for_forward(weight)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (weight,) = ctx.saved_tensors
        out = torch.zeros_like(weight)
        for rows in _row_blocks(weight):
            block = weight[:, rows]
            signs = (block.t() @ weight).sign_().mul_(grad[rows, None] + grad[None, :])
            out.addmm_(block, signs)
        return out

    @staticmethod
    def jvp(ctx, tangent: torch.Tensor) -> torch.Tensor:
        (weight,) = ctx.saved_tensors
        parts = []
        for rows in _row_blocks(weight):
            block, d_block = weight[:, rows], tangent[:, rows]
            d_gram = d_block.t() @ weight + block.t() @ tangent
            parts.append(((block.t() @ weight).sign() * d_gram).sum(dim=1))
        return torch.cat(parts)


def _row_blocks(weight: torch.Tensor, block_bytes: int = 2 << 20) -> list[slice]:
    """Slices of WᵀW's rows whose (rows × in) block takes about `block_bytes`."""
    n = weight.shape[1]
    step = max(1, block_bytes // (n * weight.element_size()))
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


AOL_SIDES = ("input", "output")


class AOLRescale(CachedParametrization):
    """Almost-orthogonal rescaling (Prach & Lampert, 2022): W ↦ W·diag(d).

    d_i = (Σ_j |WᵀW|_ij)^(-1/2) bounds the spectral norm by 1 with no iteration. For a
    convolution kernel, WᵀW is the Gram operator of the (unpadded, stride-1) convolution,
    computed as the cross-correlation of the kernel with itself over all shifts; zero padding
    and stride only remove terms, so the bound holds for them too.

    `side="output"` (dense weights only) applies the same rule to Wᵀ: diag(d)·W with
    d_i = (Σ_j |WWᵀ|_ij)^(-1/2), also of norm <= 1 (‖DW‖ = ‖WᵀD‖). Its Gram matrix is
    out × out instead of in × in: for a 64×1568 layer, 600× less arithmetic.
    """

    def __init__(self, eps: float = 1e-12, side: str = "input") -> None:
        super().__init__()
        if side not in AOL_SIDES:
            raise ValueError(f"side must be one of {AOL_SIDES} (got {side!r})")
        self.eps = eps
        self.side = side

    def cache_settings(self) -> tuple:
        return (self.eps, self.side)

    def compute(self, weight: torch.Tensor) -> torch.Tensor:
        if weight.ndim == 2 and self.side == "output":
            d = torch.rsqrt(apply_function(_AbsGramRowSums, weight.t()).clamp_min(self.eps))
            return weight * d.unsqueeze(1)
        if weight.ndim == 2:
            d = torch.rsqrt(apply_function(_AbsGramRowSums, weight).clamp_min(self.eps))
            return weight * d.unsqueeze(0)
        if weight.ndim == 4 and self.side == "input":
            kh, kw = weight.shape[-2:]
            kt = weight.transpose(0, 1)
            gram = F.conv2d(kt, kt, padding=(kh - 1, kw - 1)).abs()
            d = torch.rsqrt(gram.sum(dim=(1, 2, 3)).clamp_min(self.eps))
            return weight * d.view(1, -1, 1, 1)
        raise ValueError(
            f"AOLRescale(side={self.side!r}) expects a 2-D weight, or a 4-D one with "
            f"side='input' (got shape {tuple(weight.shape)})"
        )

    def extra_repr(self) -> str:
        return f"side={self.side!r}"


def deel_conv_coefficient(
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    input_size: tuple[int, int],
    padding: str,
) -> float:
    """deel-lip's correction of an orthonormal reshaped kernel for a convolution.

    `same` padding, stride 1: deel-lip's zero-padding formula (an average over border effects,
    not a worst case: the layer's exact norm may slightly exceed 1, which `lipschitz_bound`
    measures). Stride > 1: 1 / sqrt(ceil(kh/sh)·ceil(kw/sw)). `valid`: 1 / sqrt(kh·kw).
    """
    kh, kw = kernel_size
    sh, sw = stride
    h, w = input_size
    if padding == "valid":
        return 1.0 / math.sqrt(kh * kw)
    if sh * sw == 1:
        kh2, kw2 = (kh - 1) / 2, (kw - 1) / 2
        return math.sqrt((h * w) / ((kh * h - kh2 * (kh2 + 1)) * (kw * w - kw2 * (kw2 + 1))))
    return math.sqrt(1.0 / (math.ceil(kh / sh) * math.ceil(kw / sw)))
