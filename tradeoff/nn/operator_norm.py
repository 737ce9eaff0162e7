"""Exact operator norms of linear and convolutional maps, computed in float64.

A zero-padded convolution is an isometric embedding of the input into a grid of size
N ≥ n + k − 1, a circular convolution there, and a crop; the circular convolution is
block-diagonalised by the 2-D FFT, so its norm is the largest spectral norm of the (out × in)
frequency blocks (Delattre et al., ICML 2023, and their zero-padding follow-up). Stride s is
folded in exactly: the output frequency ν gathers the s² aliased input frequencies into one
(out × in·s²) block, scaled by 1/s.
"""

from __future__ import annotations

import functools
import math

import torch

from . import native
from .tracing import traced

_spectral = native.spectral()  # C loops (_spectral.c), or None: torch ops and NumPy

__all__ = [
    "REL_SLACK",
    "TrackedConvNorm",
    "block_norms",
    "conv2d_frequency_blocks",
    "conv2d_operator_norm",
    "dilate_kernel",
    "frequency_block_frobenius",
    "gram_iteration_norm",
    "spectral_norm",
    "tap_drift",
]

# Relative slack on every computed norm: covers float64 FFT/SVD error (~1e-15) and the
# float32 rounding of the constants used to turn logits into radii (~6e-8).
REL_SLACK = 1e-6


def spectral_norm(matrices: torch.Tensor) -> float:
    """Largest spectral norm of a batch of matrices, times (1 + REL_SLACK).

    Computed as the square root of the top eigenvalue of each matrix's smaller Gram matrix in
    float64 (2-3x faster than singular values); its rounding error, about n·1e-16 relative
    (Weyl), is far inside REL_SLACK.
    """
    m = matrices.to(torch.complex128 if matrices.is_complex() else torch.float64)
    return float(block_norms(m).max()) * (1 + REL_SLACK)


def _small_gram(m: torch.Tensor) -> torch.Tensor:
    """MᴴM or MMᴴ, whichever is smaller: its top eigenvalue is ‖M‖₂²."""
    return m.mH @ m if m.shape[-1] <= m.shape[-2] else m @ m.mH


def gram_iteration_norm(matrix: torch.Tensor, steps: int = 3) -> float:
    """Upper bound on the spectral norm of `matrix` by Gram iteration (Delattre et al., 2023).

    σ₁² ≤ ‖G^(2^k)‖_F^(1/2^k) for the Gram matrix G; each squaring tightens the bound (at most a
    factor n^(1/2^(k+1)) above σ₁ for rank n) for one n×n product, with no eigensolver. The
    iterates are renormalised (in log space) so nothing overflows; float64, times (1 + REL_SLACK).
    """
    g = _small_gram(matrix.detach().to(torch.float64))
    norm = torch.linalg.matrix_norm(g)
    if float(norm) == 0.0:
        return 0.0
    log_scale, g = torch.log(norm), g / norm
    for _ in range(steps):
        g = g @ g
        norm = torch.linalg.matrix_norm(g)
        log_scale = 2 * log_scale + torch.log(norm)
        g = g / norm
    return math.exp(float(log_scale) / 2 ** (steps + 1)) * (1 + REL_SLACK)


def conv2d_operator_norm(
    weight: torch.Tensor,
    input_size: tuple[int, int],
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, int] = (0, 0),
    dilation: tuple[int, int] = (1, 1),
    groups: int = 1,
    circular: bool = False,
) -> float:
    """Upper bound (exact for circular padding) on the norm of a 2-D convolution operator.

    `padding` is the total zero padding (top + bottom, left + right) the layer applies.
    """
    w = dilate_kernel(weight.detach().to(torch.float64), dilation)
    if groups > 1:
        return max(
            conv2d_operator_norm(g, input_size, stride, padding, (1, 1), 1, circular)
            for g in w.chunk(groups, dim=0)
        )
    blocks, scale = conv2d_frequency_blocks(w, input_size, stride, padding, circular)
    return spectral_norm(blocks) * scale


def dilate_kernel(weight: torch.Tensor, dilation: tuple[int, int]) -> torch.Tensor:
    """The kernel (out, in, kh, kw) with its taps spread `dilation` apart (zeros between)."""
    if tuple(dilation) == (1, 1):
        return weight
    out_c, in_c, kh, kw = weight.shape
    dh, dw = dilation
    dilated = weight.new_zeros(out_c, in_c, (kh - 1) * dh + 1, (kw - 1) * dw + 1)
    dilated[:, :, ::dh, ::dw] = weight
    return dilated


def conv2d_frequency_blocks(
    weight: torch.Tensor,
    input_size: tuple[int, int],
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, int] = (0, 0),
    circular: bool = False,
) -> tuple[torch.Tensor, float]:
    """The (F, out, in·s²) frequency blocks of a convolution (float64/complex128) and the
    factor: its operator norm is the largest block norm times that factor."""
    w = weight.detach().to(torch.float64)
    out_c, in_c, kh, kw = w.shape
    sh, sw = stride
    n_h, n_w = _grid((kh, kw), input_size, stride, padding, circular)
    m_h, m_w = n_h // sh, n_w // sw
    # A real kernel's block at frequency -ν is the conjugate of the one at ν (with its aliased
    # columns permuted): the same singular values, so half of the last axis covers them all.
    # Without a column stride that half is exactly what rfft2 computes, at half the cost.
    if sw == 1:
        spectrum = torch.fft.rfft2(w, s=(n_h, n_w)).unsqueeze(-2)  # (out, in, n_h, 1, half)
    else:
        spectrum = torch.fft.fft2(w, s=(n_h, n_w)).unflatten(-1, (sw, m_w))[..., : m_w // 2 + 1]
    blocks = (
        spectrum.unflatten(2, (sh, m_h))  # (out, in, sh, m_h, sw, half)
        .permute(3, 5, 0, 1, 2, 4)
        .reshape(-1, out_c, in_c * sh * sw)
        .contiguous()  # the reshape can be a strided view, on which batched products crawl
    )
    return blocks, 1 / math.sqrt(sh * sw)


def _grid(
    kernel_size: tuple[int, int],
    input_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    circular: bool,
) -> tuple[int, int]:
    """The FFT grid (n_h, n_w) on which the convolution is circular, multiples of the stride."""
    (kh, kw), (sh, sw) = kernel_size, stride
    if circular:
        n_h, n_w = input_size
    else:
        n_h = input_size[0] + max(kh - 1, padding[0])
        n_w = input_size[1] + max(kw - 1, padding[1])
    n_h, n_w = math.ceil(n_h / sh) * sh, math.ceil(n_w / sw) * sw
    if kh > n_h or kw > n_w:
        # A kernel wider than the (circular) grid folds onto itself: use the widest grid.
        n_h, n_w = max(n_h, math.ceil(kh / sh) * sh), max(n_w, math.ceil(kw / sw) * sw)
    return n_h, n_w


def frequency_block_frobenius(
    weight: torch.Tensor,
    input_size: tuple[int, int],
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, int] = (0, 0),
    circular: bool = False,
) -> torch.Tensor:
    """Upper bounds, tight to ~1e-12, on the Frobenius norms of `conv2d_frequency_blocks`'
    blocks (same order), without their FFT.

    Σ_{o,i} |K̂_oi(ν)|² is the Fourier transform of the kernel's autocorrelation summed over
    channels (Wiener–Khinchin): one (kh·kw)² Gram matrix of the taps, and a direct Fourier sum
    over the (2kh−1)×(2kw−1) shifts (two small products with cached cosine and sine tables),
    instead of out·in FFTs. A block gathers its aliased frequencies, so its squared norm is
    their sum. For a block with one row or column (one input channel at stride 1, or one
    output channel) this is its spectral norm.
    """
    return _block_frobenius(weight, input_size, stride, padding, circular)[0]


def _block_frobenius(
    weight: torch.Tensor,
    input_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    circular: bool,
) -> tuple[torch.Tensor, float | None]:
    """`frequency_block_frobenius` and, from the C loops (`_spectral.c`), their maximum."""
    out_c, in_c, kh, kw = weight.shape
    sh, sw = stride
    n_h, n_w = _grid((kh, kw), input_size, stride, padding, circular)
    m_w = n_w // sw
    if _c_readable(weight):
        w = weight.detach().contiguous()
        out = torch.empty((n_h // sh) * (m_w // 2 + 1), dtype=torch.float64)
        top = _spectral.block_frobenius(
            w.data_ptr(), w.dtype == torch.float64, out_c * in_c, kh, kw, n_h, n_w, sh, sw,
            out.data_ptr(),
        )  # fmt: skip
        return out, top  # the same sums as below, in C loops
    w = weight.detach().to(torch.float64)
    taps = w.reshape(out_c * in_c, kh * kw)
    gram = taps.t() @ taps
    scatter, cos_h, sin_h, cos_w, sin_w = _fourier_tables(kh, kw, n_h, n_w, sw, w.device)
    # Autocorrelation R(s) = Σ_c Σ_p K_c(p)·K_c(p + s): Gram entry (t1, t2) adds to the shift
    # pos(t2) − pos(t1); R is real and even, so its transform is C R Cᵀ − S R Sᵀ.
    corr = (scatter @ gram.reshape(-1)).reshape(2 * kh - 1, 2 * kw - 1)
    power = torch.addmm(cos_h @ corr @ cos_w, sin_h @ corr, sin_w, alpha=-1)
    if sh * sw > 1:
        power = power.reshape(sh, n_h // sh, sw, -1).sum(dim=(0, 2))
    power = power[:, : m_w // 2 + 1]
    # The Fourier sum's rounding is ~1e-16·(2k−1)² of Σ|R| per frequency: a margin far above
    # it keeps the bound.
    margin = 1e-12 * float(gram.abs().sum()) * sh * sw
    return (power.clamp_min(0) + margin).sqrt().reshape(-1), None


def _c_readable(t: torch.Tensor) -> bool:
    """Whether the C loops of `_spectral.c` can read `t` (a plain float32/float64 CPU tensor)."""
    return (
        _spectral is not None
        and native.allows("c")
        and t.device.type == "cpu"
        and t.dtype in (torch.float32, torch.float64)
        and not traced(t)
    )


def tap_drift(kernel: torch.Tensor, reference: torch.Tensor) -> float:
    """Σ_a ‖K[:, :, a] − K⁰[:, :, a]‖_F over the taps a of two kernels (out, in, kh, kw), in
    float64: a bound on ‖conv(K − K⁰)‖, as a convolution is a sum of shifted taps and each shift
    is an isometry."""
    if (
        _c_readable(kernel)
        and reference.dtype == kernel.dtype
        and reference.device == kernel.device
    ):
        k, r = kernel.detach().contiguous(), reference.detach().contiguous()
        pairs = k.shape[0] * k.shape[1]
        taps = k.numel() // max(pairs, 1)
        return _spectral.tap_drift(
            k.data_ptr(), r.data_ptr(), k.dtype == torch.float64, pairs, taps
        )
    delta = (kernel - reference).detach().double()
    return float(torch.linalg.matrix_norm(delta.permute(2, 3, 0, 1)).sum())


@functools.lru_cache(maxsize=64)
def _fourier_tables(
    kh: int, kw: int, n_h: int, n_w: int, sw: int, device: torch.device
) -> tuple[torch.Tensor, ...]:
    """`frequency_block_frobenius`' constants: the ((2kh−1)(2kw−1) × (kh·kw)²) 0/1 matrix that
    sums the taps' Gram matrix by shift, and the cosine and sine tables of the grid (all rows;
    the columns only up to half the grid when there is no column stride to fold)."""
    a, b = torch.arange(kh).repeat_interleave(kw), torch.arange(kw).repeat(kh)
    shift = (a[None, :] - a[:, None] + kh - 1) * (2 * kw - 1) + (b[None, :] - b[:, None] + kw - 1)
    scatter = torch.zeros((2 * kh - 1) * (2 * kw - 1), (kh * kw) ** 2, dtype=torch.float64)
    scatter[shift.reshape(-1), torch.arange((kh * kw) ** 2)] = 1.0
    cols = n_w if sw > 1 else n_w // 2 + 1

    def table(n: int, rows: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        # ν·s mod n keeps the angles small, so the tables are accurate to rounding
        nu = torch.arange(rows)[:, None]
        s = torch.arange(-(k - 1), k)[None, :]
        angle = (2 * math.pi / n) * torch.remainder(nu * s, n).to(torch.float64)
        return torch.cos(angle), torch.sin(angle)

    cos_h, sin_h = table(n_h, n_h, kh)
    cos_w, sin_w = table(n_w, cols, kw)
    tables = (scatter, cos_h, sin_h, cos_w.t().contiguous(), sin_w.t().contiguous())
    return tuple(t.to(device) for t in tables)


def block_norms(matrices: torch.Tensor) -> torch.Tensor:
    """Spectral norm of each matrix of a float64/complex128 batch, from its smaller Gram.

    A single row or column (a convolution with one input channel, as on grey images, or one
    output) is its own singular vector: its norm is the Euclidean one, with no eigensolver.
    """
    if min(matrices.shape[-2:]) == 1:
        return torch.linalg.vector_norm(matrices, dim=(-2, -1))
    top = torch.linalg.eigvalsh(_small_gram(matrices))[..., -1]
    return top.clamp_min(0).sqrt()


class TrackedConvNorm:
    """Exact norm of one convolution whose kernel changes a little between calls (training).

    It keeps the frequency-block norms n⁰_f of a reference kernel K⁰. For a new kernel K, each
    block moves by at most the Frobenius norm d_f of K − K⁰'s block (the FFT is linear; d_f
    comes from `frequency_block_frobenius`), so ‖K̂_f‖ ≤ n⁰_f + d_f. The block with the largest
    such bound is computed first; its exact norm L is a lower bound on the maximum, so only the
    blocks whose bound reaches L can hold it: their eigenvalues are computed, the others
    skipped, and the result is the exact norm, as from every block. When more than half the
    blocks remain (the kernel has drifted), all are computed and K becomes the reference.
    Blocks with a side under `PRUNE_MIN_SIDE` are always all computed: their eigenvalues cost
    less than the bookkeeping. With `at_most`, max_f n⁰_f + d_f alone, with no eigenvalues, can
    show that a cap does not bind. Blocks of one row or column (a first layer on grey images)
    take their norms from `frequency_block_frobenius` directly, which is exact for them. On
    lipconvnet's last stage (24 complex 256×256 blocks) this skips about half the eigenvalue
    problems while training.
    """

    PRUNE_MIN_SIDE = 32

    def __init__(
        self,
        input_size: tuple[int, int],
        stride: tuple[int, int] = (1, 1),
        padding: tuple[int, int] = (0, 0),
    ) -> None:
        self.geometry = {"input_size": input_size, "stride": stride, "padding": padding}
        self.reference: tuple[torch.Tensor, torch.Tensor] | None = None
        self.blocks_computed = 0  # counters, for tests and benchmarks
        self.blocks_seen = 0

    def __call__(self, kernel: torch.Tensor, at_most: float | None = None) -> float | None:
        """‖conv(kernel)‖ (exact, times 1 + REL_SLACK like `conv2d_operator_norm`); or None,
        with no eigenvalue problem, when the block bounds already show it is <= `at_most`."""
        (sh, sw), (out_c, in_c) = self.geometry["stride"], kernel.shape[:2]
        factor = (1 + REL_SLACK) / math.sqrt(sh * sw)
        if min(out_c, in_c * sh * sw) == 1:  # one-row or one-column blocks: Frobenius is exact
            norms, top = _block_frobenius(kernel, **self.geometry, circular=False)
            self.blocks_seen += len(norms)
            self.blocks_computed += len(norms)
            return (float(norms.max()) if top is None else top) * factor
        kernel = kernel.detach().to(torch.float64)
        prune = min(out_c, in_c * sh * sw) >= self.PRUNE_MIN_SIDE
        upper = self._block_bounds(kernel) if prune or at_most is not None else None
        if upper is not None and at_most is not None and float(upper.max()) * factor <= at_most:
            return None
        blocks, _ = conv2d_frequency_blocks(kernel, **self.geometry)
        self.blocks_seen += len(blocks)
        if upper is not None and prune:
            # The block most likely to hold the maximum first: its exact norm is the lower bound.
            first = int(upper.argmax())
            lower = float(block_norms(blocks[first : first + 1])[0])
            candidates = torch.nonzero(upper >= lower).flatten()
            candidates = candidates[candidates != first]
            if 2 * (len(candidates) + 1) <= len(blocks):
                self.blocks_computed += len(candidates) + 1
                if len(candidates):
                    lower = max(lower, float(block_norms(blocks[candidates]).max()))
                return lower * factor
        norms = block_norms(blocks)
        self.reference = (kernel.clone(), norms)
        self.blocks_computed += len(blocks)
        return float(norms.max()) * factor

    def _block_bounds(self, kernel: torch.Tensor) -> torch.Tensor | None:
        """n⁰_f + d_f for every block (float64 `kernel`), or None without a usable reference."""
        ref = self.reference
        if ref is None or ref[0].shape != kernel.shape or ref[0].device != kernel.device:
            return None
        drift = frequency_block_frobenius(kernel - ref[0], **self.geometry)
        return (ref[1] + drift) * (1 + 1e-9)  # float64 FFT/eigvalsh rounding: ~1e-13
