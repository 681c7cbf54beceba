"""Compiled per-request kernels of the learned routing path (task classifier and learned policy).

Written by hand (and compiled by numba) because no library does this job well: one decision is about thirty
numpy operations on arrays of 10 to 400 numbers, and numpy's fixed cost per call (1-5 µs) is most of the
time. The same arithmetic fused into two compiled loops costs a few µs. The numpy paths they mirror stay
in ``context.ContextTransform.transform`` and ``linear_ts.LinearTS.mean``/``std`` (batch, training,
benchmarks), and the tests check that both give the same numbers.

numba compiles each kernel on first use and caches the machine code beside this file (see ``_jit``), so
only the first process on a machine pays the compilation (about a second); :func:`warm_up` lets a router
pay it while loading rather than on its first request. Importing this module imports numba (about half a
second), so callers import it lazily.

Floating-point flags: re-association and contraction let the compiler vectorise the dot products (the
results differ from numpy's in the last bits); NaN and infinity keep their IEEE meaning.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["affine_softmax", "context_vector", "sample_utilities", "warm_up"]

_FLAGS = {"reassoc", "contract", "arcp", "nsz"}


def _jit(fn):  # type: ignore[no-untyped-def]
    """Compile ``fn`` lazily, caching the machine code on disk where numba finds a writable place (beside
    this file, else the user's cache folder). With none (a read-only install and no writable home, as in a
    locked-down container) numba refuses ``cache=True``: the kernel then compiles in memory in each process
    instead of failing the router."""
    try:
        return njit(cache=True, nogil=True, fastmath=_FLAGS)(fn)
    except RuntimeError:
        return njit(cache=False, nogil=True, fastmath=_FLAGS)(fn)


@_jit
def affine_softmax(coef, intercept, inv_temperature, x, out):  # type: ignore[no-untyped-def]
    """``out = softmax((coef @ x + intercept) * inv_temperature)``: calibrated class probabilities of one
    row (``coef`` float32 classes × D, ``x`` float32 D)."""
    rows = coef.shape[0]
    top = -np.inf
    for i in range(rows):
        acc = np.float32(0.0)
        for j in range(x.shape[0]):
            acc += coef[i, j] * x[j]
        z = (float(acc) + float(intercept[i])) * inv_temperature
        out[i] = z
        if z > top:
            top = z
    total = 0.0
    for i in range(rows):
        v = math.exp(out[i] - top)
        out[i] = v
        total += v
    for i in range(rows):
        out[i] /= total


@_jit
def context_vector(proj, offset, embedding, n_pca, cluster_mean, tasks, task_mean, length, out):  # type: ignore[no-untyped-def]
    """Fill ``out`` (float64, ``2 + rows(proj) + len(tasks)``) with ``[1, pca, clusters, tasks, length]``.

    ``proj`` (float32, rows × D) stacks the whitened PCA rows and the centroid rows divided by the
    temperature; ``offset`` (rows) centres the PCA block. The cluster block is a softmax over its rows
    minus ``cluster_mean``; the task block is ``tasks - task_mean``; ``length`` is the standardised log
    length."""
    rows = proj.shape[0]
    width = embedding.shape[0]
    out[0] = 1.0
    zmax = -np.inf
    for i in range(rows):
        acc = np.float32(0.0)
        for j in range(width):
            acc += proj[i, j] * embedding[j]
        z = acc - offset[i]
        out[1 + i] = z
        if i >= n_pca and z > zmax:
            zmax = z
    if rows > n_pca:
        total = 0.0
        for i in range(n_pca, rows):
            v = math.exp(out[1 + i] - zmax)
            out[1 + i] = v
            total += v
        for i in range(n_pca, rows):
            out[1 + i] = out[1 + i] / total - cluster_mean[i - n_pca]
    for i in range(tasks.shape[0]):
        out[1 + rows + i] = tasks[i] - task_mean[i]
    out[1 + rows + tasks.shape[0]] = length


@_jit
def sample_utilities(x, mu, ainv, idx, cold_mean, alpha, scale, w_quality, offsets, normals, n_draws,  # type: ignore[no-untyped-def]
                     pick, with_std, mean, std, counts, scores, order):
    """Posterior, Monte-Carlo propensities and ranking of one decision over the offered arms; returns the
    index of the first arm.

    For offered arm ``a`` with model index ``m = idx[a]`` (-1: an arm the model does not know):
    ``mean[a] = x · mu[m]`` (or ``cold_mean[a]``), ``std[a] = scale · sqrt(x ainv[m] x)`` (or
    ``scale · sqrt(x · x / alpha)``). Each of the first ``n_draws`` rows ``r`` of ``normals`` gives sampled
    utilities ``w_quality · (mean + std · normals[r]) + offsets``; ``counts[a]`` is how often arm ``a`` has
    the largest (ties: the first offered). Without ``with_std`` the posterior spread is not computed
    (``std`` is 0: what ranking by the posterior mean needs, and the quadratic form is most of the cost of a
    wide context). ``scores`` are the utilities of the last of those rows (of row 0
    when ``n_draws`` is 0, which with a zero row means the posterior means) and ``order`` the arms by
    decreasing score, ties in offered order.

    The first arm is drawn from the propensities ``counts / n_draws`` by the inverse CDF at ``pick`` (a
    uniform in [0, 1)), so that the probability of the logged arm is exactly the logged propensity; with
    no draws it is the top of ``order``."""
    k = idx.shape[0]
    d = x.shape[0]
    xx = 0.0
    for j in range(d):
        xx += x[j] * x[j]
    for a in range(k):
        m = idx[a]
        if m < 0:
            mean[a] = cold_mean[a]
            std[a] = scale * math.sqrt(xx / alpha) if with_std else 0.0
            continue
        acc = 0.0
        for j in range(d):
            acc += mu[m, j] * x[j]
        mean[a] = acc
        if not with_std:
            std[a] = 0.0
            continue
        var = 0.0
        for i in range(d):
            s = 0.0
            for j in range(d):
                s += ainv[m, i, j] * x[j]
            var += s * x[i]
        std[a] = scale * math.sqrt(max(var, 0.0))
    loc = np.empty(k)
    spread = np.empty(k)
    for a in range(k):
        loc[a] = w_quality * mean[a] + offsets[a]
        spread[a] = w_quality * std[a]
        counts[a] = 0
    for r in range(n_draws):
        best = normals[r, 0] * spread[0] + loc[0]
        arg = 0
        for a in range(1, k):
            u = normals[r, a] * spread[a] + loc[a]
            if u > best:
                best = u
                arg = a
        counts[arg] += 1
    row = n_draws - 1 if n_draws > 0 else 0
    for a in range(k):
        scores[a] = normals[row, a] * spread[a] + loc[a]
        order[a] = a
    for a in range(1, k):  # insertion sort, descending and stable: k is a handful of arms
        cur = order[a]
        b = a - 1
        while b >= 0 and scores[order[b]] < scores[cur]:
            order[b + 1] = order[b]
            b -= 1
        order[b + 1] = cur
    if n_draws == 0:
        return order[0]
    threshold = pick * n_draws
    acc_count = 0
    for a in range(k):
        acc_count += counts[a]
        if threshold < acc_count:
            return a
    return k - 1


def warm_up() -> None:
    """Compile (or load from the cache) the kernels for the argument types the router passes."""
    f32, f64 = np.float32, np.float64
    out = np.empty(5)
    affine_softmax(np.zeros((2, 3), f32), np.zeros(2, f32), 1.0, np.zeros(3, f32), out[:2])
    context_vector(np.zeros((2, 3), f32), np.zeros(2), np.zeros(3, f32), 1, np.zeros(1), np.zeros(1), np.zeros(1),
                   0.0, out)
    k = 2
    sample_utilities(out, np.zeros((k, 5)), np.zeros((k, 5, 5)), np.arange(k, dtype=np.int64), np.zeros(k),
                     1.0, 0.25, 1.0, np.zeros(k), np.zeros((3, k)), 3, 0.5, True, np.empty(k), np.empty(k),
                     np.empty(k, np.int64), np.empty(k, f64), np.empty(k, np.int64))
