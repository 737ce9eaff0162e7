/* Small dense loops of the spectral layers: the scalar recursions on the eigenvalues of a
 * weight's Gram matrix, the whole map of small weights, and the convolution cap's block bounds.
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

#include "_kernels.h" /* CLONES, restrict */

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

/* ---- The whole map of a small weight: `_SpectralBjorckGram` forward and backward in C ---- */

static double load(const void *p, int is_double, Py_ssize_t i) {
    return is_double ? ((const double *)p)[i] : (double)((const float *)p)[i];
}

static void store(void *p, int is_double, Py_ssize_t i, double x) {
    if (is_double)
        ((double *)p)[i] = x;
    else
        ((float *)p)[i] = (float)x;
}

/* The short side S (n x m, row-major, float64) of the (rows x cols) weight: W or W^T. */
static void load_short(const void *w, int is_double, Py_ssize_t rows, Py_ssize_t cols,
                       double *restrict s) {
    int transposed = rows > cols;
    Py_ssize_t n = transposed ? cols : rows, m = transposed ? rows : cols;
    for (Py_ssize_t i = 0; i < n; i++)
        for (Py_ssize_t j = 0; j < m; j++)
            s[i * m + j] = load(w, is_double, transposed ? j * cols + i : i * cols + j);
}

/* c (n x n) = a (n x k) b^T (n x k), row-major, accumulated along rows of c (vectorizes
 * without reassociating sums); bt is scratch for b^T (k x n). */
CLONES static void mul_abt(const double *restrict a, const double *restrict b, Py_ssize_t n,
                           Py_ssize_t k, double *restrict c, double *restrict bt) {
    for (Py_ssize_t j = 0; j < n; j++)
        for (Py_ssize_t t = 0; t < k; t++) bt[t * n + j] = b[j * k + t];
    memset(c, 0, (size_t)(n * n) * sizeof(double));
    for (Py_ssize_t i = 0; i < n; i++) {
        double *restrict row = c + i * n;
        for (Py_ssize_t t = 0; t < k; t++) {
            double f = a[i * k + t];
            const double *restrict brow = bt + t * n;
            for (Py_ssize_t j = 0; j < n; j++) row[j] += f * brow[j];
        }
    }
}

/* c (n x m) = alpha a (n x n) b (n x m) + beta c (c is only written when beta is 0). */
CLONES static void mul_ab(const double *restrict a, const double *restrict b, Py_ssize_t n,
                   Py_ssize_t m, double alpha, double beta, double *restrict c) {
    for (Py_ssize_t i = 0; i < n; i++) {
        double *restrict row = c + i * m;
        for (Py_ssize_t j = 0; j < m; j++) row[j] = beta == 0.0 ? 0.0 : beta * row[j];
        for (Py_ssize_t t = 0; t < n; t++) {
            double f = alpha * a[i * n + t];
            const double *restrict brow = b + t * m;
            for (Py_ssize_t j = 0; j < m; j++) row[j] += f * brow[j];
        }
    }
}

/* Forward of `_SpectralBjorckGram` (bjorck.py) for a (rows x cols) weight: the same steps,
 * with the products in float64 loops, from the eigenvalues lam (ascending, >= 0) and the
 * eigenvectors q (row-major, q[i][j] the i-th entry of the j-th eigenvector, as
 * torch.linalg.eigh gives them) of the short side's Gram matrix, which bjorck.py computes with
 * torch.linalg.eigh. Fills result (weight's dtype), new_u (u's dtype), v (cols), diff, p
 * (n x n), mu (n); returns sigma + eps, or NaN when out of memory. */
static double small_forward(const double *restrict lam, const double *restrict q, const void *w,
                            int w_double, Py_ssize_t rows, Py_ssize_t cols, const void *u0,
                            int u_double, const double *settings, long max_power,
                            long max_bjorck, void *result, void *new_u, double *restrict v,
                            double *restrict diff, double *restrict p, double *restrict mu) {
    int transposed = rows > cols;
    Py_ssize_t n = transposed ? cols : rows, m = transposed ? rows : cols;
    double *buf = malloc((size_t)(2 * n * m + 2 * n * n + 11 * n + m + 4) * sizeof(double));
    if (buf == NULL) return NAN;
    double *s = buf, *rs = s + n * m;
    double *proj = rs + n * m, *scal = proj + n, *work = scal + 5 * n, *u = work + 3 * n;
    double *tmp = u + m, *qa = tmp + n + 1, *qt = qa + n * n;
    load_short(w, w_double, rows, cols, s);
    double uu = 0.0;
    for (Py_ssize_t i = 0; i < rows; i++) {
        u[i] = load(u0, u_double, i);
        uu += u[i] * u[i];
    }
    /* u0 in the eigenbasis: q^T (S u0) when transposed (divided by s in spectral_scalars) */
    for (Py_ssize_t i = 0; i < n; i++) {
        double acc = 0.0;
        if (transposed)
            for (Py_ssize_t j = 0; j < m; j++) acc += s[i * m + j] * u[j];
        tmp[i] = transposed ? acc : u[i];
    }
    for (Py_ssize_t j = 0; j < n; j++) {
        double acc = 0.0;
        for (Py_ssize_t i = 0; i < n; i++) acc += q[i * n + j] * tmp[i];
        proj[j] = acc;
    }
    double *ucoord = scal, *prev = scal + n, *vcoord = scal + 2 * n, *a = scal + 4 * n;
    double *out5 = malloc((size_t)(5 * n + n * n) * sizeof(double));
    if (out5 == NULL) {
        free(buf);
        return NAN;
    }
    double scale = spectral_scalars(lam, proj, n, transposed, uu, settings[0], settings[1],
                                    settings[2], max_power, max_bjorck, out5, work);
    memcpy(scal, out5, (size_t)(5 * n) * sizeof(double));
    memcpy(diff, out5 + 5 * n, (size_t)(n * n) * sizeof(double));
    memcpy(mu, out5 + 3 * n, (size_t)n * sizeof(double));
    free(out5);
    /* q applied to the u coordinates (transposed: then S^T), and v */
    for (Py_ssize_t i = 0; i < n; i++) {
        double acc = 0.0;
        for (Py_ssize_t j = 0; j < n; j++) acc += q[i * n + j] * ucoord[j];
        tmp[i] = acc;
    }
    if (transposed) {
        for (Py_ssize_t j = 0; j < m; j++) {
            double acc = 0.0;
            for (Py_ssize_t i = 0; i < n; i++) acc += s[i * m + j] * tmp[i];
            store(new_u, u_double, j, acc);
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            double acc = 0.0;
            for (Py_ssize_t j = 0; j < n; j++) acc += q[i * n + j] * vcoord[j];
            v[i] = acc;
        }
    } else {
        for (Py_ssize_t i = 0; i < n; i++) store(new_u, u_double, i, tmp[i]);
        for (Py_ssize_t i = 0; i < n; i++) {
            double acc = 0.0;
            for (Py_ssize_t j = 0; j < n; j++) acc += q[i * n + j] * prev[j];
            tmp[i] = acc;
        }
        double sq = 0.0;
        for (Py_ssize_t j = 0; j < m; j++) {
            double acc = 0.0;
            for (Py_ssize_t i = 0; i < n; i++) acc += s[i * m + j] * tmp[i];
            v[j] = acc;
            sq += acc * acc;
        }
        double norm = sqrt(sq) < 1e-12 ? 1e-12 : sqrt(sq);
        for (Py_ssize_t j = 0; j < m; j++) v[j] /= norm;
    }
    /* p = q diag(a) q^T; result = (p / scale) S */
    for (Py_ssize_t i = 0; i < n; i++)
        for (Py_ssize_t j = 0; j < n; j++) {
            qa[i * n + j] = q[i * n + j] * a[j];
            qt[i * n + j] = q[j * n + i];
        }
    mul_ab(qa, qt, n, n, 1.0, 0.0, p);
    mul_ab(p, s, n, m, 1.0 / scale, 0.0, rs);
    for (Py_ssize_t i = 0; i < n; i++)
        for (Py_ssize_t j = 0; j < m; j++)
            store(result, w_double, transposed ? j * cols + i : i * m + j, rs[i * m + j]);
    free(buf);
    return scale;
}

/* Backward of `_SpectralBjorckGram` (bjorck.py), in float64: d_weight (grad's dtype) from the
 * gradient of the result and what the forward saved. */
static int small_backward(const void *grad, int g_double, const void *w, int w_double,
                          Py_ssize_t rows, Py_ssize_t cols, const void *u, int u_double,
                          const double *restrict v, const double *restrict q,
                          const double *restrict diff, const double *restrict p,
                          const double *restrict mu, double scale, void *d_weight) {
    int transposed = rows > cols;
    Py_ssize_t n = transposed ? cols : rows, m = transposed ? rows : cols;
    double *buf = malloc((size_t)(3 * n * m + 6 * n * n) * sizeof(double));
    if (buf == NULL) return -1;
    double *s = buf, *g = s + n * m, *ds = g + n * m, *dp = ds + n * m, *t1 = dp + n * n;
    double *inner = t1 + n * n, *dgram = inner + n * n, *sym = dgram + n * n, *qt = sym + n * n;
    load_short(w, w_double, rows, cols, s);
    load_short(grad, g_double, rows, cols, g);
    mul_abt(g, s, n, m, dp, ds); /* dp = g S^T / scale; ds is free until dS */
    double dot = 0.0;        /* <grad, result> = <p, dp> */
    for (Py_ssize_t i = 0; i < n * n; i++) {
        dp[i] /= scale;
        dot += p[i] * dp[i];
    }
    /* inner = diff o (q^T sym(dp) q), dgram = q inner q^T */
    for (Py_ssize_t i = 0; i < n; i++)
        for (Py_ssize_t j = 0; j < n; j++) {
            sym[i * n + j] = 0.5 * (dp[i * n + j] + dp[j * n + i]);
            qt[i * n + j] = q[j * n + i];
        }
    mul_ab(sym, q, n, n, 1.0, 0.0, t1);
    mul_ab(qt, t1, n, n, 1.0, 0.0, inner);
    for (Py_ssize_t i = 0; i < n * n; i++) inner[i] *= diff[i];
    for (Py_ssize_t i = 0; i < n; i++) dot += 2.0 * mu[i] * inner[i * n + i];
    mul_ab(q, inner, n, n, 1.0, 0.0, t1);
    mul_ab(t1, qt, n, n, 1.0, 0.0, dgram);
    /* dS = 2 dgram S / scale^2 + p g / scale */
    memset(ds, 0, (size_t)(n * m) * sizeof(double));
    mul_ab(dgram, s, n, m, 2.0 / (scale * scale), 0.0, ds);
    mul_ab(p, g, n, m, 1.0 / scale, 1.0, ds);
    double f = dot / scale;
    for (Py_ssize_t r = 0; r < rows; r++) {
        double ur = load(u, u_double, r);
        for (Py_ssize_t c = 0; c < cols; c++) {
            double x = transposed ? ds[c * m + r] : ds[r * m + c];
            store(d_weight, g_double, r * cols + c, x - f * ur * v[c]);
        }
    }
    free(buf);
    return 0;
}

static PyObject *py_small_forward(PyObject *self, PyObject *args) {
    unsigned long long lam, q, w, u0, result, new_u, v, diff, p, mu;
    int w_double, u_double;
    Py_ssize_t rows, cols;
    double settings[3];
    long max_power, max_bjorck;
    if (!PyArg_ParseTuple(args, "KKKpnnKpdddllKKKKKK", &lam, &q, &w, &w_double, &rows, &cols,
                          &u0, &u_double, &settings[0], &settings[1], &settings[2], &max_power,
                          &max_bjorck, &result, &new_u, &v, &diff, &p, &mu))
        return NULL;
    double scale;
    Py_BEGIN_ALLOW_THREADS
    scale = small_forward((const double *)(uintptr_t)lam, (const double *)(uintptr_t)q,
                          (const void *)(uintptr_t)w, w_double, rows, cols,
                          (const void *)(uintptr_t)u0, u_double, settings, max_power,
                          max_bjorck, (void *)(uintptr_t)result, (void *)(uintptr_t)new_u,
                          (double *)(uintptr_t)v, (double *)(uintptr_t)diff,
                          (double *)(uintptr_t)p, (double *)(uintptr_t)mu);
    Py_END_ALLOW_THREADS
    if (isnan(scale)) return PyErr_NoMemory();
    return PyFloat_FromDouble(scale);
}

static PyObject *py_small_backward(PyObject *self, PyObject *args) {
    unsigned long long grad, w, u, v, q, diff, p, mu, d_weight;
    int g_double, w_double, u_double;
    Py_ssize_t rows, cols;
    double scale;
    if (!PyArg_ParseTuple(args, "KpKpnnKpKKKKKdK", &grad, &g_double, &w, &w_double, &rows, &cols,
                          &u, &u_double, &v, &q, &diff, &p, &mu, &scale, &d_weight))
        return NULL;
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = small_backward((const void *)(uintptr_t)grad, g_double, (const void *)(uintptr_t)w,
                            w_double, rows, cols, (const void *)(uintptr_t)u, u_double,
                            (const double *)(uintptr_t)v, (const double *)(uintptr_t)q,
                            (const double *)(uintptr_t)diff, (const double *)(uintptr_t)p,
                            (const double *)(uintptr_t)mu, scale, (void *)(uintptr_t)d_weight);
    Py_END_ALLOW_THREADS
    if (status != 0) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* ---- Frequency-block Frobenius norms of a convolution (operator_norm.frequency_block_frobenius) */

/* From the taps' Gram matrix (T x T, T = kh kw, float64): the autocorrelation R summed over
 * channels, its Fourier transform P = Ch R Cw^T - Sh R Sw^T on the (n_h x n_w) grid (cosine and
 * sine tables of the shifts), folded over the stride's aliases, and out = sqrt(max(P, 0) +
 * margin) for the (n_h / sh) x (n_w / sw / 2 + 1) blocks, margin = 1e-12 sum|gram| sh sw. */
static int block_frobenius(const double *restrict gram, int kh, int kw, Py_ssize_t n_h,
                           Py_ssize_t n_w, int sh, int sw, double *restrict out) {
    int rh = 2 * kh - 1, rw = 2 * kw - 1, t = kh * kw;
    Py_ssize_t m_h = n_h / sh, m_w = n_w / sw, half = m_w / 2 + 1;
    Py_ssize_t cols = sw > 1 ? n_w : n_w / 2 + 1;
    size_t size = (size_t)(rh * rw + 2 * n_h * rh + 2 * cols * rw + 2 * n_h * rw + n_h * cols);
    double *buf = calloc(size, sizeof(double));
    if (buf == NULL) return -1;
    double *r = buf, *ch = r + rh * rw, *sn_h = ch + n_h * rh, *cw = sn_h + n_h * rh;
    double *sn_w = cw + cols * rw, *a1 = sn_w + cols * rw, *a2 = a1 + n_h * rw;
    double *power = a2 + n_h * rw;
    double total = 0.0;
    for (int t1 = 0; t1 < t; t1++)
        for (int t2 = 0; t2 < t; t2++) {
            double g = gram[t1 * t + t2];
            int da = t2 / kw - t1 / kw + kh - 1, db = t2 % kw - t1 % kw + kw - 1;
            r[da * rw + db] += g;
            total += fabs(g);
        }
    const double two_pi = 6.283185307179586;
    for (Py_ssize_t nu = 0; nu < n_h; nu++)
        for (int a = 0; a < rh; a++) {
            /* nu * shift mod n keeps the angle small, so the tables are accurate to rounding */
            Py_ssize_t k = ((nu * (a - kh + 1)) % n_h + n_h) % n_h;
            ch[nu * rh + a] = cos(two_pi * (double)k / (double)n_h);
            sn_h[nu * rh + a] = sin(two_pi * (double)k / (double)n_h);
        }
    for (Py_ssize_t nu = 0; nu < cols; nu++)
        for (int b = 0; b < rw; b++) {
            Py_ssize_t k = ((nu * (b - kw + 1)) % n_w + n_w) % n_w;
            cw[nu * rw + b] = cos(two_pi * (double)k / (double)n_w);
            sn_w[nu * rw + b] = sin(two_pi * (double)k / (double)n_w);
        }
    for (Py_ssize_t i = 0; i < n_h; i++)
        for (int b = 0; b < rw; b++) {
            double x1 = 0.0, x2 = 0.0;
            for (int a = 0; a < rh; a++) {
                x1 += ch[i * rh + a] * r[a * rw + b];
                x2 += sn_h[i * rh + a] * r[a * rw + b];
            }
            a1[i * rw + b] = x1;
            a2[i * rw + b] = x2;
        }
    for (Py_ssize_t i = 0; i < n_h; i++)
        for (Py_ssize_t j = 0; j < cols; j++) {
            double x = 0.0;
            for (int b = 0; b < rw; b++)
                x += a1[i * rw + b] * cw[j * rw + b] - a2[i * rw + b] * sn_w[j * rw + b];
            power[i * cols + j] = x;
        }
    double margin = 1e-12 * total * sh * sw;
    for (Py_ssize_t i = 0; i < m_h; i++)
        for (Py_ssize_t j = 0; j < half; j++) {
            double x = 0.0;
            for (int s1 = 0; s1 < sh; s1++)
                for (int s2 = 0; s2 < sw; s2++) x += power[(s1 * m_h + i) * cols + s2 * m_w + j];
            out[i * half + j] = sqrt((x > 0.0 ? x : 0.0) + margin);
        }
    free(buf);
    return 0;
}

/* The taps' Gram matrix (T x T, T = kh kw) of a kernel (pairs x T, row-major), in float64. */
static void taps_gram(const void *kernel, int is_double, Py_ssize_t pairs, int t,
                      double *restrict gram) {
    memset(gram, 0, (size_t)(t * t) * sizeof(double));
    for (Py_ssize_t c = 0; c < pairs; c++)
        for (int t1 = 0; t1 < t; t1++) {
            double x = load(kernel, is_double, c * t + t1);
            for (int t2 = 0; t2 < t; t2++) gram[t1 * t + t2] += x * load(kernel, is_double, c * t + t2);
        }
}

static PyObject *py_block_frobenius(PyObject *self, PyObject *args) {
    unsigned long long kernel, out;
    int is_double, kh, kw, sh, sw;
    Py_ssize_t pairs, n_h, n_w;
    if (!PyArg_ParseTuple(args, "KpniinniiK", &kernel, &is_double, &pairs, &kh, &kw, &n_h, &n_w,
                          &sh, &sw, &out))
        return NULL;
    int status = -1;
    double top = 0.0;
    Py_BEGIN_ALLOW_THREADS
    double *gram = malloc((size_t)(kh * kw * kh * kw) * sizeof(double));
    if (gram != NULL) {
        taps_gram((const void *)(uintptr_t)kernel, is_double, pairs, kh * kw, gram);
        status = block_frobenius(gram, kh, kw, n_h, n_w, sh, sw, (double *)(uintptr_t)out);
        free(gram);
        Py_ssize_t count = (n_h / sh) * ((n_w / sw) / 2 + 1);
        for (Py_ssize_t i = 0; status == 0 && i < count; i++)
            if (((double *)(uintptr_t)out)[i] > top) top = ((double *)(uintptr_t)out)[i];
    }
    Py_END_ALLOW_THREADS
    if (status != 0) return PyErr_NoMemory();
    return PyFloat_FromDouble(top);
}

/* sum over the taps a of ||K[:, :, a] - R[:, :, a]||_F for two kernels (out, in, kh, kw) of the
 * same dtype, in float64: the drift bound of the convolution cap (parametrizations.py). */
static PyObject *py_tap_drift(PyObject *self, PyObject *args) {
    unsigned long long kernel, ref;
    int is_double;
    Py_ssize_t pairs, taps;
    if (!PyArg_ParseTuple(args, "KKpnn", &kernel, &ref, &is_double, &pairs, &taps)) return NULL;
    double total = 0.0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t a = 0; a < taps; a++) {
        double sq = 0.0;
        for (Py_ssize_t c = 0; c < pairs; c++) {
            double d = load((const void *)(uintptr_t)kernel, is_double, c * taps + a) -
                       load((const void *)(uintptr_t)ref, is_double, c * taps + a);
            sq += d * d;
        }
        total += sqrt(sq);
    }
    Py_END_ALLOW_THREADS
    return PyFloat_FromDouble(total);
}

static PyMethodDef methods[] = {
    {"bjorck_multipliers", py_bjorck_multipliers, METH_VARARGS,
     "bjorck_multipliers(lam, n, eps, beta, max_iter, a, diff): data pointers of contiguous "
     "float64 buffers; fills a (n) and diff (n x n)."},
    {"spectral_forward", py_small_forward, METH_VARARGS,
     "spectral_forward(lam, q, w, w_double, rows, cols, u, u_double, eps_spectral, eps_bjorck, "
     "beta, max_power, max_bjorck, result, new_u, v, diff, p, mu) -> sigma + eps."},
    {"spectral_backward", py_small_backward, METH_VARARGS,
     "spectral_backward(grad, g_double, w, w_double, rows, cols, u, u_double, v, q, diff, p, "
     "mu, scale, d_weight): the weight's gradient, in grad's dtype."},
    {"block_frobenius", py_block_frobenius, METH_VARARGS,
     "block_frobenius(kernel, is_double, pairs, kh, kw, n_h, n_w, sh, sw, out) -> max: "
     "Frobenius bounds of a convolution's frequency blocks (out, float64) from its kernel "
     "(pairs = out_channels x in_channels rows of kh x kw taps)."},
    {"tap_drift", py_tap_drift, METH_VARARGS,
     "tap_drift(kernel, ref, is_double, pairs, taps) -> sum over taps of the Frobenius norm "
     "of the difference of two kernels' (pairs x taps) columns."},
    {"spectral_scalars", py_spectral_scalars, METH_VARARGS,
     "spectral_scalars(lam, proj, n, transposed, uu, eps_spectral, eps_bjorck, beta, "
     "max_power, max_bjorck, out) -> sigma + eps_spectral; fills out (5n + n^2 float64)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_spectral",
                                    "Scalar recursions of the spectral layers (see _spectral.c).",
                                    -1, methods};

/* Bumped whenever a function's arguments change: tradeoff/nn/native.py refuses a build of an
 * older source (a stale editable install) instead of passing it the wrong arguments. */
#define INTERFACE 3

PyMODINIT_FUNC PyInit__spectral(void) {
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddIntConstant(m, "INTERFACE", INTERFACE) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
