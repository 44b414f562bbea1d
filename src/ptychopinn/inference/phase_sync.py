"""Phase synchronisation: per-patch phase offsets (and amplitude gains) that make overlapping patches agree.

A single diffraction pattern is blind to a constant phase of its exit wave, so a network that sees one
pattern at a time may give every patch its own phase offset; averaging such patches kills the low
spatial frequencies of the phase. For windows ``i, j`` that overlap, ``c_ij = sum_overlap w_i conj(w_j)``;
if ``w_i = exp(-1j phi_i) q`` for a common ``q``, then ``c_ij = exp(-1j (phi_i - phi_j)) sum |q|**2``, so the
Hermitian matrix ``[c_ij]`` is ``D W D^H`` with ``D = diag(exp(-1j phi))`` and its leading eigenvector
recovers every offset at once (Marchesini et al. 2016, "phase synchronisation"). The correction of
window ``i`` is ``conj(v_i) / |v_i|``. The same graph with ``log(mean|w_j| / mean|w_i|)`` on its edges gives
per-window amplitude gains by weighted least squares (gauge: geometric mean gain 1). Each connected
component of the overlap graph is solved on its own; the global phase is fixed so that the mean
correction has phase 0.

Windows at the same corner are linked only to the first window there, and distinct corners through those
first windows (see :func:`_pairs`). Cost: one pass over the pairs, grouped by their integer offset (a
batched product per offset, in chunks), then a sparse eigenvector and a sparse least-squares solve.
Memory: all windows (``P * window**2`` complex values) plus the pair list.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["synchronize"]

_CHUNK = 8192  # pairs gathered at once: bounds the temporary copies of windows


def _pairs(corners: np.ndarray, window: int) -> np.ndarray:
    """``[E, 2]`` int64 index pairs ``i < j`` of overlapping windows: every pair of distinct corners whose
    ``window x window`` squares overlap (linked through the first window at each corner), and every further
    window at a corner linked to that first one. Windows at the same corner (gridsize > 1 predicts each
    pattern in several groups) are thus linked once each instead of to every copy of every neighbour, which
    keeps the pair list proportional to the number of distinct corners."""
    from scipy.spatial import cKDTree

    p = corners.shape[0]
    if p < 2:
        return np.zeros((0, 2), np.int64)
    uniq, first, inverse = np.unique(corners, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    rep = first[inverse]  # the first window at each window's corner
    dup = np.flatnonzero(np.arange(p) != rep)
    parts = [np.stack([rep[dup], dup], axis=1)]
    if uniq.shape[0] >= 2:
        tree = cKDTree(uniq.astype(np.float64))
        up = np.asarray(tree.query_pairs(r=window - 1, p=np.inf, output_type="ndarray"), np.int64).reshape(-1, 2)
        parts.append(np.stack([first[up[:, 0]], first[up[:, 1]]], axis=1))
    pairs = np.concatenate(parts).astype(np.int64)
    return np.stack([pairs.min(axis=1), pairs.max(axis=1)], axis=1)


def _overlap_sums(windows: torch.Tensor, corners: np.ndarray, pairs: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per pair: ``c = sum w_i conj(w_j)``, ``sum |w_i|``, ``sum |w_j|`` over the overlap, and its pixel count."""
    w = int(windows.shape[-1])
    e = pairs.shape[0]
    cross = np.zeros(e, np.complex128)
    mag_i = np.zeros(e)
    mag_j = np.zeros(e)
    npix = np.zeros(e)
    d = corners[pairs[:, 1]] - corners[pairs[:, 0]]  # (dx, dy) of j relative to i
    keys, inverse = np.unique(d, axis=0, return_inverse=True)
    for k, (dx, dy) in enumerate(keys):
        ri, rj = slice(max(0, dy), w + min(0, dy)), slice(max(0, -dy), w + min(0, -dy))
        ci, cj = slice(max(0, dx), w + min(0, dx)), slice(max(0, -dx), w + min(0, -dx))
        all_sel = np.flatnonzero(inverse.reshape(-1) == k)
        for s in range(0, all_sel.size, _CHUNK):
            sel = all_sel[s:s + _CHUNK]
            ii = torch.from_numpy(pairs[sel, 0])
            jj = torch.from_numpy(pairs[sel, 1])
            a = windows[ii][:, ri, ci]
            b = windows[jj][:, rj, cj]
            cross[sel] = (a * b.conj()).sum(dim=(-2, -1)).to(torch.complex128).numpy()
            mag_i[sel] = a.abs().sum(dim=(-2, -1)).double().numpy()
            mag_j[sel] = b.abs().sum(dim=(-2, -1)).double().numpy()
        npix[all_sel] = (w - abs(int(dy))) * (w - abs(int(dx)))
    return cross, mag_i, mag_j, npix


def _leading_vector(matrix: object, size: int) -> np.ndarray:
    from scipy.sparse.linalg import eigsh

    if size <= 3:
        dense = matrix.toarray()  # type: ignore[attr-defined]
        return np.linalg.eigh(dense)[1][:, -1]
    _, vec = eigsh(matrix, k=1, which="LA", v0=np.ones(size, np.complex128), tol=1e-8)
    return vec[:, 0]


def synchronize(windows: torch.Tensor, corners: np.ndarray, *, amplitude: bool = True) -> np.ndarray:
    """Complex gains ``[P]`` complex128 that make overlapping windows agree (module docstring).

    Args:
        windows: ``[P, w, w]`` complex windows as placed on the canvas (integer positions).
        corners: ``[P, 2]`` int64 (col, row) canvas corners of the windows.
        amplitude: also solve per-window amplitude gains (else unit modulus).

    Returns:
        ``gains [P]``: multiply window ``i`` by ``gains[i]`` before stitching. Windows with no overlapping
        neighbour get 1.
    """
    from scipy import sparse
    from scipy.sparse.csgraph import connected_components

    p = int(windows.shape[0])
    gains = np.ones(p, np.complex128)
    corners = np.asarray(corners, dtype=np.int64)
    pairs = _pairs(corners, int(windows.shape[-1]))
    if pairs.shape[0] == 0:
        return gains
    cross, mag_i, mag_j, npix = _overlap_sums(windows, corners, pairs)
    good = (np.abs(cross) > 0) & (mag_i > 0) & (mag_j > 0)
    pairs, cross, mag_i, mag_j, npix = pairs[good], cross[good], mag_i[good], mag_j[good], npix[good]
    if pairs.shape[0] == 0:
        return gains
    i, j = pairs[:, 0], pairs[:, 1]
    h = sparse.coo_matrix((np.concatenate([cross, cross.conj()]), (np.concatenate([i, j]), np.concatenate([j, i]))),
                          shape=(p, p)).tocsr()
    n_comp, labels = connected_components(abs(h), directed=False)
    for comp in range(n_comp):
        members = np.flatnonzero(labels == comp)
        if members.size < 2:
            continue
        vec = _leading_vector(h[members][:, members], members.size)
        mod = np.abs(vec)
        phase = np.where(mod > 1e-12 * mod.max(), np.conj(vec) / np.maximum(mod, 1e-300), 1.0)
        mean = phase.mean()
        gains[members] = phase * (np.conj(mean) / abs(mean) if abs(mean) > 0 else 1.0)
    if amplitude:
        gains *= np.exp(_log_gains(p, i, j, np.log(mag_j / mag_i), npix, labels))
    return gains


def _log_gains(p: int, i: np.ndarray, j: np.ndarray, ratio: np.ndarray, weight: np.ndarray,
               labels: np.ndarray) -> np.ndarray:
    """Least-squares ``l`` with ``l_i - l_j ~ ratio_ij`` (weights ``weight``), mean 0 per component."""
    from scipy import sparse
    from scipy.sparse.linalg import lsqr

    e = i.size
    sw = np.sqrt(weight / weight.max())
    rows = np.concatenate([np.arange(e), np.arange(e)])
    a = sparse.coo_matrix((np.concatenate([sw, -sw]), (rows, np.concatenate([i, j]))), shape=(e, p)).tocsr()
    sol = lsqr(a, sw * ratio, atol=1e-10, btol=1e-10)[0]
    for comp in np.unique(labels):
        members = labels == comp
        sol[members] -= sol[members].mean()
    return sol
