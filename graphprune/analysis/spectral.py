r"""Spectral metrics of blocks: how well a sparse block's Laplacian approximates the dense one.

For Laplacians :math:`L_d` (dense) and :math:`L_s` (sparse) of the same node set, the generalised eigenvalues
:math:`\lambda` of :math:`L_s x = \lambda L_d x` on the range of :math:`L_d` bound
:math:`\lambda_{\min} L_d \preceq L_s \preceq \lambda_{\max} L_d`. The relative condition number
:math:`\kappa = \lambda_{\max}/\lambda_{\min}` is scale-free (a pruned, un-reweighted block has
:math:`L_s \approx (\text{density}) L_d`); the best scaling :math:`c` gives a :math:`(1 \pm \epsilon)`
spectral approximation with :math:`\epsilon = (\kappa - 1)/(\kappa + 1)`. A sparse block that disconnects a
component of the dense one has :math:`\lambda_{\min} = 0` and :math:`\kappa = \infty`.

References
----------
.. [1] D. A. Spielman, S.-H. Teng. "Spectral Sparsification of Graphs", SIAM J. Comput. 40(4), 2011.
   doi:10.1137/08074489X
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from ..errors import ParameterError
from ..resistance import laplacian_from_biadjacency

__all__ = ["spectral_similarity", "block_spectral_similarity", "algebraic_connectivity", "block_spectrum_metrics"]


def block_spectral_similarity(dense_B, sparse_B, *, max_nodes: int = 4096) -> dict:
    """Generalised eigenvalue bounds of a sparse biadjacency against the dense one (dense ``O(N^3)`` solve).

    Returns a dict with ``lambda_min``, ``lambda_max``, ``kappa``, ``epsilon`` (after the best scaling) and
    ``epsilon_unscaled`` (``max(lambda_max - 1, 1 - lambda_min)``, meaningful for reweighted sparsifiers).
    Blocks with more than ``max_nodes`` non-isolated nodes give NaN and a ``reason``.
    """
    Bd = np.asarray(dense_B, dtype=np.float64)
    Bs = np.asarray(sparse_B, dtype=np.float64)
    if Bd.shape != Bs.shape:
        raise ParameterError(f"Dense and sparse biadjacencies differ in shape: {Bd.shape} vs {Bs.shape}.")
    Ld = laplacian_from_biadjacency(Bd)
    Ls = laplacian_from_biadjacency(Bs)
    live = np.flatnonzero(np.diag(Ld) > 0)
    nan = dict(lambda_min=np.nan, lambda_max=np.nan, kappa=np.nan, epsilon=np.nan, epsilon_unscaled=np.nan)
    if live.size > max_nodes:
        return {**nan, "reason": f"{live.size} nodes > max_nodes={max_nodes}"}
    Ld, Ls = Ld[np.ix_(live, live)], Ls[np.ix_(live, live)]
    w, U = scipy.linalg.eigh(Ld)
    tol = max(w.max(), 1.0) * live.size * np.finfo(float).eps * 10
    keep = w > tol
    Ur = U[:, keep] / np.sqrt(w[keep])  # maps the range of Ld to an orthonormal frame
    lam = scipy.linalg.eigvalsh(Ur.T @ Ls @ Ur)
    lmin, lmax = max(float(lam.min()), 0.0), float(lam.max())
    if lmin <= 1e-9 * max(lmax, 1e-300):
        kappa, eps = np.inf, 1.0
        lmin = 0.0
    else:
        kappa = lmax / lmin
        eps = (kappa - 1) / (kappa + 1)
    return dict(lambda_min=lmin, lambda_max=lmax, kappa=kappa, epsilon=eps,
                epsilon_unscaled=max(lmax - 1.0, 1.0 - lmin), reason="")


def spectral_similarity(dense, sparse, *, view: str = "channel", blocks=None, max_nodes: int = 4096,
                        scales=None):
    """Per weight block, the spectral similarity of the sparse graph's Laplacian to the dense one's.

    Parameters
    ----------
    dense : MultipartiteGraph
        The reference graph (its own masks, usually none).
    sparse : MultipartiteGraph or dict of masks
        The sparsified graph, or masks to apply to ``dense``.
    view : {"channel", "rolled"}
    blocks : list of str, optional
        Restrict to these blocks.
    scales : dict of str to torch.Tensor, optional
        Per-parameter factors on the sparse graph's weights (a reweighting sparsifier's ``scales_``).

    Returns
    -------
    pandas.DataFrame
        One row per weight block: ``block``, ``nodes``, ``kept``, ``total``, ``lambda_min``, ``lambda_max``,
        ``kappa`` (inf when the sparse block disconnects the dense one), ``epsilon``, ``epsilon_unscaled``,
        ``reason``.

    Examples
    --------
    >>> import torch, graphprune
    >>> G = graphprune.from_model(torch.nn.Linear(8, 8), torch.randn(1, 8))
    >>> df = graphprune.spectral_similarity(G, G)
    >>> round(float(df.kappa.iloc[0]), 6)
    1.0
    """
    import pandas as pd

    from ..graph import MultipartiteGraph

    if not isinstance(sparse, MultipartiteGraph):
        sparse = dense.with_masks(sparse)
    rows = []
    for b in dense.weight_blocks:
        if blocks is not None and b.name not in blocks:
            continue
        Bd = dense.biadjacency(b, view=view).toarray()
        sc = None
        if scales is not None and b.param in scales:
            sc = scales[b.param]
            sc = sc[b.param_slice[0] : b.param_slice[1]] if b.param_slice is not None else sc
        Bs = sparse.biadjacency(sparse.block(b.name), view=view, scale=sc).toarray()
        r = block_spectral_similarity(Bd, Bs, max_nodes=max_nodes)
        rows.append(dict(block=b.name, nodes=int(sum(Bd.shape)), kept=int(sparse.block_mask(b.name).sum()),
                         total=b.num_edges, **r))
    return pd.DataFrame(rows)


def _top_singular_values(M, k: int = 3, dense_limit: int = 3000):
    """Largest ``k`` singular values of a (scipy sparse or dense) matrix, dense SVD when small, ARPACK otherwise."""
    m, n = M.shape
    k = min(k, min(m, n))
    if max(m, n) <= dense_limit or min(m, n) <= k + 1:
        A = M.toarray() if hasattr(M, "toarray") else np.asarray(M)
        return np.linalg.svd(A, compute_uv=False)[:k]
    from scipy.sparse.linalg import svds

    s = svds(M.astype(np.float64), k=k, return_singular_vectors=False, random_state=0)
    return np.sort(s)[::-1]


def algebraic_connectivity(B, *, dense_limit: int = 3000) -> float:
    """Second smallest Laplacian eigenvalue (Fiedler value) of the bipartite graph of ``B`` over its non-isolated
    nodes; 0 when that graph is disconnected. Dense ``eigvalsh`` up to ``dense_limit`` nodes, else ARPACK in
    shift-invert mode.

    References
    ----------
    .. [1] M. Fiedler. "Algebraic connectivity of graphs", Czechoslovak Math. J. 23(2), 1973.
       doi:10.21136/CMJ.1973.101168
    """
    import scipy.sparse as sp

    Bs = sp.csr_array(B)
    m, n = Bs.shape
    A = sp.block_array([[None, Bs], [Bs.T, None]]).tocsr()
    deg = np.asarray(A.sum(axis=1)).ravel()
    live = np.flatnonzero(deg > 0)
    if live.size < 2:
        return float("nan")
    A = A[live][:, live]
    L = sp.diags_array(deg[live]) - A
    if live.size <= dense_limit:
        w = scipy.linalg.eigvalsh(L.toarray())
        return float(max(w[1], 0.0))
    from scipy.sparse.linalg import eigsh

    w = eigsh(L.tocsc(), k=2, sigma=-1e-6 * float(deg.max()), which="LM", return_eigenvectors=False)
    return float(max(np.sort(w)[1], 0.0))


def block_spectrum_metrics(B) -> dict:
    r"""Spectral metrics of one bipartite block given its kept biadjacency ``B`` (rows outputs, columns inputs).

    Returns a dict: ``algebraic_connectivity``; ``spectral_gap`` (:math:`\sigma_1 - \sigma_2` of the 0/1
    biadjacency: the adjacency spectrum of a bipartite graph is :math:`\pm` its singular values, so the trivial
    pair is :math:`\pm\sigma_1` and the largest non-trivial eigenvalue is :math:`\hat\mu = \sigma_2`, the third
    largest :math:`|\lambda|`); ``ramanujan_gap`` :math:`\sqrt{d_L - 1} + \sqrt{d_R - 1} - \hat\mu` with the average
    degrees of both sides (Hoang et al., ICLR 2023); ``weighted_spectral_gap`` (the same gap on :math:`|W|`,
    after Hoang et al., NeurIPS 2023); and ``reason`` naming why a value is missing (NaN, never 0): the Ramanujan
    gap needs average degrees of at least 3 on both sides.

    References
    ----------
    .. [1] D. Hoang, S. Liu, R. Marculescu, Z. Wang. "Revisiting Pruning at Initialization through the Lens of
       Ramanujan Graph", ICLR 2023.
    .. [2] A. Lubotzky, R. Phillips, P. Sarnak. "Ramanujan graphs", Combinatorica 8, 1988. doi:10.1007/BF02126799
    """
    import scipy.sparse as sp

    Bw = sp.csr_array(B)
    Bw.eliminate_zeros()
    Bu = Bw.copy()
    Bu.data[:] = 1.0
    reasons = []
    out = dict(algebraic_connectivity=np.nan, spectral_gap=np.nan, ramanujan_gap=np.nan,
               weighted_spectral_gap=np.nan)
    if Bu.nnz == 0:
        return {**out, "reason": "no edges"}
    out["algebraic_connectivity"] = algebraic_connectivity(Bw)
    su = _top_singular_values(Bu, 2)
    sw = _top_singular_values(Bw, 2)
    if su.size >= 2:
        out["spectral_gap"] = float(su[0] - su[1])
        out["weighted_spectral_gap"] = float(sw[0] - sw[1])
        rows = np.asarray(Bu.sum(axis=1)).ravel()
        cols = np.asarray(Bu.sum(axis=0)).ravel()
        d_out = rows[rows > 0].mean()  # average degree of the output side
        d_in = cols[cols > 0].mean()
        if min(d_out, d_in) < 3:
            reasons.append(f"ramanujan gap undefined: average degree {min(d_out, d_in):.2f} < 3")
        else:
            out["ramanujan_gap"] = float(np.sqrt(d_out - 1) + np.sqrt(d_in - 1) - su[1])
    else:
        reasons.append("spectral gaps undefined: a side has a single node")
    return {**out, "reason": "; ".join(reasons)}
