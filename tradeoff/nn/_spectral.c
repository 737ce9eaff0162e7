/* Scalar recursions of the spectral layers, on the eigenvalues of a weight's Gram matrix.
 *
 * `SpectralBjorck` computes deel-lip's power iteration and Björck iterations from one
 * eigendecomposition (tradeoff/nn/bjorck.py explains the algebra). What is left after it is a
 * few hundred operations on vectors of n <= 96 entries and one n x n matrix: in NumPy, each
 * costs microseconds of dispatch, and a training step pays them cold, after the convolutions
 * have evicted the interpreter's caches. These loops do the same arithmetic in one call.
 *
 * The Python side (bjorck.py) checks dtypes (float64), contiguity and sizes before it passes
 * data pointers here. Built by setup.py; optional: without it the NumPy loops in bjorck.py
 * compute the same values (to rounding: the sums here run in index order).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef _MSC_VER
#define restrict __restrict
#endif

/* x / max(||x||, 1e-12), as bjorck._unit and bjorck._np_unit. */
static void unit(const double *restrict x, double *restrict out, Py_ssize_t n) {
    double sq = 0.0;
    for (Py_ssize_t i = 0; i < n; i++) sq += x[i] * x[i];
    double norm = sqrt(sq);
    if (norm < 1e-12) norm = 1e-12;
    for (Py_ssize_t i = 0; i < n; i++) out[i] = x[i] / norm;
}

/* Björck's scalar iteration a <- (1 + beta) a - beta a^3 lam from a = 1 on ascending `lam`,
 * and the divided differences diff_ij of the resulting polynomial (bjorck._bjorck_multipliers,
 * term for term: the cube of the larger index multiplies, the smaller lam scales). diff is
 * symmetric: the upper triangle is iterated, then mirrored. `work` holds 2n doubles. */
static void multipliers(const double *restrict lam, Py_ssize_t n, double eps, double beta,
                        long max_iter, double *restrict a, double *restrict diff,
                        double *restrict work) {
    double *restrict cube = work, *restrict next = work + n;
    for (Py_ssize_t i = 0; i < n; i++) a[i] = 1.0;
    memset(diff, 0, (size_t)(n * n) * sizeof(double));
    if (max_iter < 1) max_iter = 1;
    for (long it = 0; it < max_iter; it++) {
        for (Py_ssize_t i = 0; i < n; i++) cube[i] = a[i] * a[i] * a[i];
        for (Py_ssize_t i = 0; i < n; i++) {
            double ai = a[i];
            double *restrict row = diff + i * n;
            for (Py_ssize_t j = i; j < n; j++) {
                double aj = a[j];
                double lower = lam[i] < lam[j] ? lam[i] : lam[j];
                double d = row[j];
                row[j] = (1 + beta) * d - beta * (d * (ai * ai + ai * aj + aj * aj) * lower +
                                                  cube[j]); /* j >= i: the larger index */
            }
        }
        double delta_sq = 0.0;
        for (Py_ssize_t i = 0; i < n; i++) {
            next[i] = (1 + beta) * a[i] - beta * cube[i] * lam[i];
            double step = next[i] - a[i];
            delta_sq += step * step * lam[i];
        }
        memcpy(a, next, (size_t)n * sizeof(double));
        if (delta_sq < eps * eps) break;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        for (Py_ssize_t j = 0; j < i; j++) diff[i * n + j] = diff[j * n + i];
}

static PyObject *py_bjorck_multipliers(PyObject *self, PyObject *args) {
    unsigned long long lam_p, a_p, diff_p;
    Py_ssize_t n;
    double eps, beta;
    long max_iter;
    if (!PyArg_ParseTuple(args, "KnddlKK", &lam_p, &n, &eps, &beta, &max_iter, &a_p, &diff_p))
        return NULL;
    double *work = malloc((size_t)(2 * n + 1) * sizeof(double));
    if (work == NULL) return PyErr_NoMemory();
    Py_BEGIN_ALLOW_THREADS
    multipliers((const double *)(uintptr_t)lam_p, n, eps, beta, max_iter,
                (double *)(uintptr_t)a_p, (double *)(uintptr_t)diff_p, work);
    Py_END_ALLOW_THREADS
    free(work);
    Py_RETURN_NONE;
}

/* The scalar part of `_SpectralBjorckGram.forward` (bjorck.py), from the ascending, clamped
 * eigenvalues `lam` of the short side's Gram matrix and `proj`, the start vector u0 in the
 * eigenbasis (divided by the singular values when the weight is transposed). `uu` is u0·u0.
 * `out` (5n + n^2 doubles) receives: the coordinates of the new u (divided by s when
 * transposed), the previous iterate, v's coordinates, mu = lam / (sigma + eps)^2, the Björck
 * multipliers and their divided differences. Returns sigma + eps_spectral. */
static double spectral_scalars(const double *restrict lam, const double *restrict proj,
                               Py_ssize_t n, int transposed, double uu, double eps_spectral,
                               double eps_bjorck, double beta, long max_power,
                               long max_bjorck, double *restrict out, double *restrict work) {
    double *restrict u_coords = out, *restrict prev = out + n, *restrict v = out + 2 * n;
    double *restrict mu = out + 3 * n, *restrict a = out + 4 * n, *restrict diff = out + 5 * n;
    double *restrict s = work, *restrict c = work + n, *restrict tmp = work + 2 * n;
    double inside = 0.0;
    for (Py_ssize_t i = 0; i < n; i++) {
        s[i] = sqrt(lam[i]);
        c[i] = transposed ? (s[i] > 0 ? proj[i] / s[i] : 0.0) : proj[i];
        inside += c[i] * c[i];
    }
    double outside = uu - inside > 0.0 ? uu - inside : 0.0;
    if (max_power < 1) max_power = 1;
    for (long it = 0; it < max_power; it++) {
        memcpy(prev, c, (size_t)n * sizeof(double));
        for (Py_ssize_t i = 0; i < n; i++) tmp[i] = lam[i] * prev[i];
        unit(tmp, c, n);
        double delta_sq = 0.0;
        for (Py_ssize_t i = 0; i < n; i++) delta_sq += (c[i] - prev[i]) * (c[i] - prev[i]);
        if (delta_sq + (it == 0 ? outside : 0.0) < eps_spectral * eps_spectral) break;
    }
    for (Py_ssize_t i = 0; i < n; i++) tmp[i] = s[i] * prev[i];
    unit(tmp, v, n);
    double scale = 0.0;
    for (Py_ssize_t i = 0; i < n; i++) scale += c[i] * s[i] * v[i];
    scale += eps_spectral;
    for (Py_ssize_t i = 0; i < n; i++) {
        u_coords[i] = transposed ? (s[i] > 0 ? c[i] / s[i] : 0.0) : c[i];
        mu[i] = lam[i] / (scale * scale);
    }
    multipliers(mu, n, eps_bjorck, beta, max_bjorck, a, diff, work);
    return scale;
}

static PyObject *py_spectral_scalars(PyObject *self, PyObject *args) {
    unsigned long long lam_p, proj_p, out_p;
    Py_ssize_t n;
    int transposed;
    double uu, eps_spectral, eps_bjorck, beta;
    long max_power, max_bjorck;
    if (!PyArg_ParseTuple(args, "KKnpddddllK", &lam_p, &proj_p, &n, &transposed, &uu,
                          &eps_spectral, &eps_bjorck, &beta, &max_power, &max_bjorck, &out_p))
        return NULL;
    double *work = malloc((size_t)(3 * n + 1) * sizeof(double));
    if (work == NULL) return PyErr_NoMemory();
    double scale;
    Py_BEGIN_ALLOW_THREADS
    scale = spectral_scalars((const double *)(uintptr_t)lam_p, (const double *)(uintptr_t)proj_p,
                             n, transposed, uu, eps_spectral, eps_bjorck, beta, max_power,
                             max_bjorck, (double *)(uintptr_t)out_p, work);
    Py_END_ALLOW_THREADS
    free(work);
    return PyFloat_FromDouble(scale);
}

static PyMethodDef methods[] = {
    {"bjorck_multipliers", py_bjorck_multipliers, METH_VARARGS,
     "bjorck_multipliers(lam, n, eps, beta, max_iter, a, diff): data pointers of contiguous "
     "float64 buffers; fills a (n) and diff (n x n)."},
    {"spectral_scalars", py_spectral_scalars, METH_VARARGS,
     "spectral_scalars(lam, proj, n, transposed, uu, eps_spectral, eps_bjorck, beta, "
     "max_power, max_bjorck, out) -> sigma + eps_spectral; fills out (5n + n^2 float64)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_spectral",
                                    "Scalar recursions of the spectral layers (see _spectral.c).",
                                    -1, methods};

PyMODINIT_FUNC PyInit__spectral(void) { return PyModule_Create(&module); }
