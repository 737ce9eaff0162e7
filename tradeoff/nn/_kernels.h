/* Compiler settings shared by tradeoff's C kernels (_pairsort.c, _spectral.c). */
#ifndef TRADEOFF_KERNELS_H
#define TRADEOFF_KERNELS_H

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
/* One build runs the AVX2 loops where the CPU has it and the SSE2 ones elsewhere. */
#define CLONES __attribute__((target_clones("avx2", "default")))
#else
#define CLONES
#endif

#ifdef _MSC_VER
#define restrict __restrict
#endif

#endif
