/* Fused GroupSort2 kernels: one pass over memory forward, one backward.
 *
 * GroupSort2 sorts each pair of channels (2k, 2k+1). Written with torch ops it takes three
 * passes forward (min, max, the swap mask) and two backward (one per channel of the pair); these
 * loops take one each, on a contiguous tensor seen as (outer, 2, inner): outer = batch x C/2,
 * inner = the spatial size (1 for a dense layer's (N, C) output).
 *
 * The Python side (tradeoff/nn/activations.py) checks dtype, contiguity and sizes before it
 * passes data pointers here, and passes torch's intra-op thread count, so the loops share torch's
 * OpenMP runtime and its setting. Built by setup.py; optional: without it, or without a C
 * compiler, GroupSort2 runs on torch ops with identical results.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>

#include "_kernels.h" /* CLONES, restrict */

#ifdef _OPENMP
#define OPENMP 1
#else
#define OPENMP 0
#endif

/* Each pair of channel rows is read from memory once, ahead of its use (the next pair's rows
 * are prefetched), and written row after row: the min row, then the max row. Writing both rows
 * element by element interleaves four memory streams, which measured ~1.5x slower than a copy
 * on cold caches; this order is within ~1.2x of it. */
static inline void prefetch_block(const void *p, size_t bytes) {
#if defined(__GNUC__) || defined(__clang__)
    for (size_t k = 0; k < bytes; k += 64) __builtin_prefetch((const char *)p + k, 0, 3);
#else
    (void)p;
    (void)bytes;
#endif
}

/* out[lo] = min, out[hi] = max, mask = 1 where the pair was out of order (a > b); mask may be
 * NULL (inference: no backward). A pair with a NaN is left as it is. */
#define SORT_PAIRS(NAME, T)                                                                    \
    CLONES static void NAME(const T *restrict x, T *restrict out, uint8_t *restrict mask,     \
                            Py_ssize_t outer, Py_ssize_t inner, int threads) {                \
        if (inner == 1) {                                                                      \
            _Pragma("omp parallel for num_threads(threads) schedule(static) if(threads > 1)") \
            for (Py_ssize_t k = 0; k < outer; k++) {                                           \
                T u = x[2 * k], v = x[2 * k + 1];                                              \
                int s = u > v;                                                                 \
                out[2 * k] = s ? v : u;                                                        \
                out[2 * k + 1] = s ? u : v;                                                    \
                if (mask) mask[k] = (uint8_t)s;                                                \
            }                                                                                  \
            return;                                                                            \
        }                                                                                      \
        _Pragma("omp parallel for num_threads(threads) schedule(static) if(threads > 1)")     \
        for (Py_ssize_t o = 0; o < outer; o++) {                                               \
            const T *restrict a = x + 2 * o * inner, *restrict b = a + inner;                  \
            T *restrict lo = out + 2 * o * inner, *restrict hi = lo + inner;                   \
            if (o + 1 < outer) prefetch_block(b + inner, 2 * inner * sizeof(T));               \
            if (mask) {                                                                        \
                uint8_t *restrict m = mask + o * inner;                                        \
                for (Py_ssize_t i = 0; i < inner; i++) {                                       \
                    T u = a[i], v = b[i];                                                      \
                    lo[i] = u > v ? v : u;                                                     \
                    m[i] = u > v;                                                              \
                }                                                                              \
            } else {                                                                           \
                for (Py_ssize_t i = 0; i < inner; i++) lo[i] = a[i] > b[i] ? b[i] : a[i];      \
            }                                                                                  \
            for (Py_ssize_t i = 0; i < inner; i++) hi[i] = a[i] > b[i] ? a[i] : b[i];          \
        }                                                                                      \
    }

/* out = t with the two channels of each pair exchanged where mask is 1: GroupSort2's
 * gradient (the permutation is an involution) and its forward-mode derivative. */
#define SWAP_PAIRS(NAME, T)                                                                    \
    CLONES static void NAME(const T *restrict t, const uint8_t *restrict mask,                \
                            T *restrict out, Py_ssize_t outer, Py_ssize_t inner,              \
                            int threads) {                                                     \
        if (inner == 1) {                                                                      \
            _Pragma("omp parallel for num_threads(threads) schedule(static) if(threads > 1)") \
            for (Py_ssize_t k = 0; k < outer; k++) {                                           \
                T u = t[2 * k], v = t[2 * k + 1];                                              \
                int s = mask[k];                                                               \
                out[2 * k] = s ? v : u;                                                        \
                out[2 * k + 1] = s ? u : v;                                                    \
            }                                                                                  \
            return;                                                                            \
        }                                                                                      \
        _Pragma("omp parallel for num_threads(threads) schedule(static) if(threads > 1)")     \
        for (Py_ssize_t o = 0; o < outer; o++) {                                               \
            const T *restrict a = t + 2 * o * inner, *restrict b = a + inner;                  \
            T *restrict lo = out + 2 * o * inner, *restrict hi = lo + inner;                   \
            const uint8_t *restrict m = mask + o * inner;                                      \
            if (o + 1 < outer) prefetch_block(b + inner, 2 * inner * sizeof(T));               \
            for (Py_ssize_t i = 0; i < inner; i++) lo[i] = m[i] ? b[i] : a[i];                 \
            for (Py_ssize_t i = 0; i < inner; i++) hi[i] = m[i] ? a[i] : b[i];                 \
        }                                                                                      \
    }

SORT_PAIRS(sort_pairs_f32, float)
SORT_PAIRS(sort_pairs_f64, double)
SWAP_PAIRS(swap_pairs_f32, float)
SWAP_PAIRS(swap_pairs_f64, double)

static int check_sizes(Py_ssize_t outer, Py_ssize_t inner, int threads) {
    if (outer < 0 || inner < 1 || threads < 1) {
        PyErr_Format(PyExc_ValueError,
                     "bad sizes: outer=%zd (>= 0), inner=%zd (>= 1), threads=%d (>= 1)", outer,
                     inner, threads);
        return 0;
    }
    return 1;
}

static PyObject *py_sort_pairs(PyObject *self, PyObject *args) {
    Py_ssize_t x, out, mask, outer, inner;
    int threads, is_double;
    if (!PyArg_ParseTuple(args, "nnnnnip", &x, &out, &mask, &outer, &inner, &threads,
                          &is_double) ||
        !check_sizes(outer, inner, threads))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    if (is_double)
        sort_pairs_f64((const double *)x, (double *)out, (uint8_t *)mask, outer, inner, threads);
    else
        sort_pairs_f32((const float *)x, (float *)out, (uint8_t *)mask, outer, inner, threads);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *py_swap_pairs(PyObject *self, PyObject *args) {
    Py_ssize_t t, mask, out, outer, inner;
    int threads, is_double;
    if (!PyArg_ParseTuple(args, "nnnnnip", &t, &mask, &out, &outer, &inner, &threads,
                          &is_double) ||
        !check_sizes(outer, inner, threads))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    if (is_double)
        swap_pairs_f64((const double *)t, (const uint8_t *)mask, (double *)out, outer, inner,
                       threads);
    else
        swap_pairs_f32((const float *)t, (const uint8_t *)mask, (float *)out, outer, inner,
                       threads);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"sort_pairs", py_sort_pairs, METH_VARARGS,
     "sort_pairs(x, out, mask, outer, inner, threads, is_double): data pointers of contiguous "
     "(outer, 2, inner) tensors; mask (outer, inner) uint8, or 0 for none."},
    {"swap_pairs", py_swap_pairs, METH_VARARGS,
     "swap_pairs(t, mask, out, outer, inner, threads, is_double): exchange each pair where "
     "mask is 1."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_pairsort",
                                    "Fused GroupSort2 loops (see _pairsort.c).", -1, methods};

PyMODINIT_FUNC PyInit__pairsort(void) {
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddIntConstant(m, "OPENMP", OPENMP) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
