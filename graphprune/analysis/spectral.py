r"""Spectral metrics of blocks: how well a sparse block's Laplacian approximates the dense one.

For Laplacians :math:`L_d` (dense) and :math:`L_s` (sparse) of the same node set, the generalised eigenvalues
:math:`\lambda` of :math:`L_s x = \lambda L_d x` on the range of :math:`L_d` bound
:math:`\lambda_{\min} L_d \preceq L_s \preceq \lambda_{\max} L_d`. The relative condition number
:math:`\kappa = \lambda_{\max}/\lambda_{\min}` is scale-free (a pruned, un-reweighted block has
:math:`L_s \approx (\text{density}) L_d`); the best scaling :math:`c` gives a :math:`(1 \pm \epsilon)`
spectral approximation [1]_ with :math:`\epsilon = (\kappa - 1)/(\kappa + 1)`. A sparse block that disconnects a
component of the dense one has :math:`\lambda_{\min} = 0` and :math:`\kappa = \infty`.

Cost: only the extreme eigenvalues are needed, so no full eigendecomposition is made. The null space of a
Laplacian (one indicator vector per connected component) is lifted by a rank-``c`` term, the lifted matrix is
factored once (Cholesky, :math:`N^3/3` flops) and ARPACK [2]_ finds the one largest eigenvalue of the whitened pencil
(a few dozen :math:`O(N^2)` solves). Blocks of at most ``_DENSE_NODES`` nodes use dense eigenvalue solvers.

References
----------
.. [1] D. A. Spielman, S.-H. Teng. "Spectral Sparsification of Graphs", SIAM J. Comput. 40(4), 2011.
   doi:10.1137/08074489X
.. [2] R. B. Lehoucq, D. C. Sorensen, C. Yang. "ARPACK Users' Guide", SIAM, 1998. doi:10.1137/1.9780898719628
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from .._validation import check_graph, show_typed
from ..errors import ParameterError
from .reasons import Reason

__all__ = ["spectral_similarity", "block_spectral_similarity", "algebraic_connectivity", "block_spectrum_metrics"]

#: Blocks with at most this many nodes are solved with dense eigenvalue routines (exact, and fastest when small).
_DENSE_NODES = 400


def _as_csr(B, name="B", owner="this function") -> sp.csr_array:
    """``B`` (dense or scipy sparse, 2-D, real) as a float64 CSR array; ParameterError naming ``name`` otherwise."""
    given = B
    if sp.issparse(B):
        ok = B.ndim == 2 and B.dtype.kind in "biuf"
    else:
        try:
            if hasattr(B, "detach") and hasattr(B, "cpu"):  # a torch.Tensor (torch is not imported here)
                B = B.detach().cpu()
            arr = None if isinstance(B, (str, bytes, Mapping)) or B is None else np.asarray(B)
        except (TypeError, ValueError):
            arr = None
        ok = arr is not None and arr.ndim == 2 and arr.dtype.kind in "biuf"
        B = arr
    if not ok:
        raise ParameterError(f"The '{name}' parameter of {owner} must be a 2-D biadjacency matrix of real numbers "
                             "(numpy array, scipy sparse array or torch.Tensor; rows outputs, columns inputs), "
                             f"e.g. G.biadjacency(block). Got {show_typed(given)} instead.")
    M = sp.csr_array(B, dtype=np.float64) if not sp.issparse(B) else sp.csr_array(B).astype(np.float64)
    M.eliminate_zeros()
    return M


def _adjacency(B: sp.csr_array) -> sp.csr_array:
    """Sparse adjacency of the bipartite graph of ``B`` (rows first, then columns)."""
    return sp.block_array([[None, B], [B.T, None]], format="csr")


def _components(B: sp.csr_array, live: np.ndarray) -> tuple[int, np.ndarray]:
    """Number of connected components of the bipartite graph of ``B`` over the nodes ``live`` and their labels."""
    m, n = B.shape
    if live.size == m + n:  # fast path: one row (or column) touching every column (row) joins everything
        per_row = np.diff(B.indptr)
        per_col = np.bincount(B.indices, minlength=n)
        every = per_row.min(initial=0) > 0 and per_col.min(initial=0) > 0  # no isolated node
        if every and (per_row.max() == n or per_col.max() == m):
            return 1, np.zeros(m + n, dtype=np.int32)
    A = _adjacency(B)
    if live.size < A.shape[0]:
        A = A[live][:, live]
    return connected_components(A, directed=False)


def _dense_laplacian(B: sp.csr_array, live: np.ndarray) -> np.ndarray:
    """Dense Laplacian of the bipartite graph of ``B`` restricted to the nodes ``live``."""
    from ..resistance import laplacian_from_biadjacency

    L = laplacian_from_biadjacency(B.toarray())
    return L if live.size == L.shape[0] else L[np.ix_(live, live)]


def _lift(L: np.ndarray, labels: np.ndarray, s: float) -> np.ndarray:
    """``L + s Z Z^T`` in place, ``Z`` the orthonormal indicator vectors of the components ``labels``."""
    c = int(labels.max()) + 1
    if c == 1:
        L += s / L.shape[0]
        return L
    for k in range(c):
        idx = np.flatnonzero(labels == k)
        L[np.ix_(idx, idx)] += s / idx.size
    return L


def _largest_whitened(K, A) -> float:
    """Largest eigenvalue of ``K^{-1} A K^{-T}`` (``K`` lower triangular, ``A`` symmetric sparse or dense)."""
    from scipy.sparse.linalg import LinearOperator

    N = K.shape[0]
    solve = scipy.linalg.solve_triangular

    def mv(x):
        y = solve(K, x, lower=True, trans="T", check_finite=False)
        return solve(K, A @ y, lower=True, check_finite=False)

    op = LinearOperator((N, N), matvec=mv, dtype=np.float64)
    return _arpack_largest(op, lambda: mv(np.eye(N)))


def _arpack_largest(op, dense) -> float:
    """Largest eigenvalue of the symmetric operator ``op`` by ARPACK; when ARPACK fails (clustered spectra),
    from the dense matrix ``dense()``."""
    from scipy.sparse.linalg import ArpackError, ArpackNoConvergence, eigsh

    N = op.shape[0]
    v0 = np.random.default_rng(0).standard_normal(N)  # fixed start: results do not depend on global RNGs
    try:
        return float(eigsh(op, k=1, which="LA", v0=v0, tol=1e-8, ncv=min(N, 24), return_eigenvectors=False,
                           maxiter=20 * N)[0])
    except (ArpackError, ArpackNoConvergence):
        M = dense()
        return float(scipy.linalg.eigvalsh((M + M.T) / 2, check_finite=False)[-1])


def _pencil_extremes(Bd, Bs, live, labels, need_min: bool, factors=None) -> tuple[float, float]:
    """``(lambda_min, lambda_max)`` of ``Ls x = lambda Ld x`` on the range of ``Ld`` over the nodes ``live``
    (``labels``: the dense graph's components there). ``Ls`` vanishes on the component indicators (its edges are
    a subset of ``Ld``'s). With ``need_min=False`` only the largest is computed (``lambda_min`` returned as 0).
    ``factors`` may hold ``"sparse": (live, K)``, a Cholesky factor of ``Ls`` lifted on the constant vector over
    ``live`` (from :func:`algebraic_connectivity`), reused when the node sets agree."""
    chol = scipy.linalg.cholesky
    Ld = _dense_laplacian(Bd, live)
    N = Ld.shape[0]
    Ls_dense = _dense_laplacian(Bs, live)
    if N <= _DENSE_NODES:
        Kd = chol(_lift(Ld, labels, float(Ld.diagonal().max())), lower=True, check_finite=False)
        C = scipy.linalg.solve_triangular(Kd, Ls_dense, lower=True, check_finite=False)
        C = scipy.linalg.solve_triangular(Kd, C.T, lower=True, check_finite=False)
        # the lifted null directions have eigenvalue 0 here: drop as many of the smallest values
        w = scipy.linalg.eigvalsh((C + C.T) / 2, check_finite=False)[int(labels.max()) + 1:]
        return (float(w.min()) if need_min else 0.0), float(w.max())
    Ls = sp.csr_array(Ls_dense)
    Ld_keep = Ld.copy() if need_min else None
    Kd = chol(_lift(Ld, labels, float(Ld.diagonal().max())), lower=True, overwrite_a=True, check_finite=False)
    del Ld
    lmax = _largest_whitened(Kd, Ls)
    del Kd
    if not need_min:
        return 0.0, lmax
    known = (factors or {}).get("sparse")
    if known is not None and int(labels.max()) == 0 and np.array_equal(known[0], live):
        Ks = known[1]  # any positive lift works: Ld vanishes on the lifted direction
    else:
        Ks = chol(_lift(Ls_dense, labels, float(Ls_dense.diagonal().max())), lower=True, overwrite_a=True,
                  check_finite=False)
    mu = _largest_whitened(Ks, Ld_keep)  # Ld vanishes on the lifted directions: they give 0, the rest 1/lambda
    return (1.0 / mu if mu > 0 else 0.0), lmax


def block_spectral_similarity(dense_B, sparse_B, *, max_nodes: int = 4096, _factors=None) -> dict:
    """Generalised eigenvalue bounds of a sparse biadjacency against the dense one.

    Parameters
    ----------
    dense_B, sparse_B : array-like or scipy.sparse matrix
        Biadjacencies of the same shape (rows outputs, columns inputs), e.g. ``|W|`` with and without the mask.
    max_nodes : int
        Blocks with more non-isolated nodes give NaN and a ``reason``.

    Returns
    -------
    dict
        ``lambda_min``, ``lambda_max``, ``kappa``, ``epsilon`` (after the best scaling), ``epsilon_unscaled``
        (``max(lambda_max - 1, 1 - lambda_min)``, meaningful for reweighted sparsifiers) and ``reason`` (empty, or
        why ``kappa`` is infinite or missing).

    Notes
    -----
    Two Cholesky factorisations of ``N x N`` lifted Laplacians and a few dozen triangular solves (``N`` nodes);
    no eigendecomposition. When the sparse block splits a connected component of the dense one, ``kappa`` is
    ``inf`` without any factorisation of the sparse side.

    Examples
    --------
    >>> import numpy as np
    >>> B = np.ones((3, 4))
    >>> round(block_spectral_similarity(B, B)["kappa"], 8)
    1.0
    >>> block_spectral_similarity(B, np.eye(3, 4))["reason"]
    'the sparse block has 4 connected components where the dense one has 1'
    """
    values, why = similarity_and_reason(dense_B, sparse_B, max_nodes=max_nodes, factors=_factors)
    return {**values, "reason": why.text if why is not None else ""}


def similarity_and_reason(dense_B, sparse_B, *, max_nodes: int = 4096, factors=None) -> tuple[dict, Reason | None]:
    """The values of :func:`block_spectral_similarity` without ``reason``, and the
    :class:`~graphprune.analysis.reasons.Reason` why ``kappa`` is infinite or missing (None when it is not): code
    ``"too_large"`` (numbers ``nodes``, ``max_nodes``), ``"dense_no_edges"``, ``"disconnected"`` (``components``,
    ``dense_components``) or ``"lambda_min_zero"``. The report reads the reason; the public function writes its
    text."""
    Bd = _as_csr(dense_B, "dense_B", "block_spectral_similarity")
    Bs = _as_csr(sparse_B, "sparse_B", "block_spectral_similarity")
    if Bd.shape != Bs.shape:
        raise ParameterError(f"Dense and sparse biadjacencies differ in shape: {Bd.shape} vs {Bs.shape}.")
    deg = np.concatenate([np.diff(Bd.indptr), np.bincount(Bd.indices, minlength=Bd.shape[1])])
    live = np.flatnonzero(deg > 0)
    nan = dict(lambda_min=np.nan, lambda_max=np.nan, kappa=np.nan, epsilon=np.nan, epsilon_unscaled=np.nan)
    if live.size > max_nodes:
        return nan, Reason("too_large", f"{live.size} nodes > max_nodes={max_nodes}",
                           {"nodes": int(live.size), "max_nodes": int(max_nodes)})
    if live.size == 0:
        return nan, Reason("dense_no_edges", "the dense block has no edges")
    cd, labels = _components(Bd, live)
    cs, _ = _components(Bs, live)
    split = cs > cd
    lmin, lmax = _pencil_extremes(Bd, Bs, live, labels, need_min=not split, factors=factors)
    why = None
    if split or lmin <= 1e-9 * max(lmax, 1e-300):
        lmin, kappa, eps = 0.0, np.inf, 1.0
        if split:
            why = Reason("disconnected", f"the sparse block has {cs} connected components where the dense one has "
                         f"{cd}", {"components": int(cs), "dense_components": int(cd)})
        else:
            why = Reason("lambda_min_zero", "lambda_min is numerically 0")
    else:
        kappa = lmax / lmin
        eps = (kappa - 1) / (kappa + 1)
    return dict(lambda_min=lmin, lambda_max=lmax, kappa=kappa, epsilon=eps,
                epsilon_unscaled=max(lmax - 1.0, 1.0 - lmin)), why


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

    check_graph(dense, "spectral_similarity", "dense")
    if not isinstance(sparse, MultipartiteGraph):
        sparse = dense.with_masks(sparse)
    rows = []
    for b in dense.weight_blocks:
        if blocks is not None and b.name not in blocks:
            continue
        Bd = dense.biadjacency(b, view=view)
        sc = None
        if scales is not None and b.param in scales:
            sc = scales[b.param]
            sc = b.rows(sc)
        Bs = sparse.biadjacency(sparse.block(b.name), view=view, scale=sc)
        r = block_spectral_similarity(Bd, Bs, max_nodes=max_nodes)
        rows.append(dict(block=b.name, nodes=int(sum(Bd.shape)), kept=int(sparse.block_mask(b.name).sum()),
                         total=b.num_edges, **r))
    return pd.DataFrame(rows)


def _top_singular_values(M, k: int = 3, dense_limit: int = 300):
    """Largest ``k`` singular values of a (scipy sparse or dense) matrix: dense SVD when small, ARPACK otherwise."""
    m, n = M.shape
    k = min(k, min(m, n))
    if min(m, n) <= dense_limit or min(m, n) <= k + 1:
        A = M.toarray() if hasattr(M, "toarray") else np.asarray(M)
        return np.linalg.svd(A, compute_uv=False)[:k]
    from scipy.sparse.linalg import ArpackError, ArpackNoConvergence, svds

    v0 = np.random.default_rng(0).standard_normal(min(m, n))
    try:
        s = svds(sp.csr_array(M, dtype=np.float64), k=k, ncv=min(min(m, n), 24), return_singular_vectors=False,
                 v0=v0, tol=1e-10)
    except (ArpackError, ArpackNoConvergence):  # clustered singular values: the dense SVD
        A = M.toarray() if hasattr(M, "toarray") else np.asarray(M)
        return np.linalg.svd(A, compute_uv=False)[:k]
    return np.sort(s)[::-1]


def algebraic_connectivity(B, *, dense_limit: int = _DENSE_NODES, _factors=None) -> float:
    """Second smallest Laplacian eigenvalue (Fiedler value) of the bipartite graph of ``B`` over its non-isolated
    nodes; 0 when that graph is disconnected, NaN with fewer than two such nodes.

    Dense ``eigvalsh`` up to ``dense_limit`` nodes; above, the Laplacian lifted on its null space,
    ``L + s 1 1^T / N`` with ``s`` at least the largest eigenvalue of ``L``, is factored once and ARPACK finds the
    largest eigenvalue of its inverse, ``1 / lambda_2``.

    References
    ----------
    .. [1] M. Fiedler. "Algebraic connectivity of graphs", Czechoslovak Math. J. 23(2), 1973.
       doi:10.21136/CMJ.1973.101168

    Examples
    --------
    >>> import numpy as np
    >>> round(algebraic_connectivity(np.ones((2, 3))), 8)  # K_{2,3}: Laplacian eigenvalues 0, 2, 2, 3, 5
    2.0
    """
    Bs = _as_csr(B, "B", "algebraic_connectivity")
    deg = np.concatenate([np.diff(Bs.indptr), np.bincount(Bs.indices, minlength=Bs.shape[1])])
    live = np.flatnonzero(deg > 0)
    if live.size < 2:
        return float("nan")
    c, _ = _components(Bs, live)
    if c > 1:
        return 0.0
    L = _dense_laplacian(Bs, live)
    if live.size <= dense_limit:
        w = scipy.linalg.eigvalsh(L, check_finite=False)
        return float(max(w[1], 0.0))
    s = 2.0 * float(L.diagonal().max())  # >= lambda_max(L): the lifted null direction is the largest
    L += s / L.shape[0]
    K = scipy.linalg.cholesky(L, lower=True, overwrite_a=True, check_finite=False)
    if _factors is not None:  # the caller's dict: block_spectral_similarity reuses the factor
        _factors["sparse"] = (live, K)
    from scipy.sparse.linalg import LinearOperator

    N = K.shape[0]

    def solve(x):
        return scipy.linalg.cho_solve((K, True), x, check_finite=False)

    mu = _arpack_largest(LinearOperator((N, N), dtype=np.float64, matvec=solve), lambda: solve(np.eye(N)))
    return 1.0 / mu


def block_spectrum_metrics(B, *, _factors=None) -> dict:
    r"""Spectral metrics of one bipartite block given its kept biadjacency ``B`` (rows outputs, columns inputs).

    Returns a dict: ``algebraic_connectivity``; ``spectral_gap`` (:math:`\sigma_1 - \sigma_2` of the 0/1
    biadjacency: the adjacency spectrum of a bipartite graph is :math:`\pm` its singular values, so the trivial
    pair is :math:`\pm\sigma_1` and the largest non-trivial eigenvalue is :math:`\hat\mu = \sigma_2`, the third
    largest :math:`|\lambda|`); ``ramanujan_gap`` :math:`\sqrt{d_L - 1} + \sqrt{d_R - 1} - \hat\mu` with the average
    degrees of both sides (Hoang et al., ICLR 2023); ``weighted_spectral_gap`` (the same gap on :math:`|W|`,
    after Hoang et al., NeurIPS 2023); and ``reason`` naming why a value is missing (NaN, never 0): the Ramanujan
    gap needs average degrees of at least 3 on both sides. Only the two largest singular values are computed
    (ARPACK above 300 nodes a side).

    References
    ----------
    .. [1] D. Hoang, S. Liu, R. Marculescu, Z. Wang. "Revisiting Pruning at Initialization through the Lens of
       Ramanujan Graph", ICLR 2023.
    .. [2] A. Lubotzky, R. Phillips, P. Sarnak. "Ramanujan graphs", Combinatorica 8, 1988. doi:10.1007/BF02126799

    Examples
    --------
    >>> import numpy as np
    >>> m = block_spectrum_metrics(np.ones((4, 4)))  # K_{4,4}: singular values 4, 0, 0, 0
    >>> m["spectral_gap"], m["ramanujan_gap"], m["reason"]
    (4.0, 3.4641016151377544, '')
    >>> block_spectrum_metrics(np.eye(4))["reason"]
    'ramanujan gap undefined: average degree 1.00 < 3'
    """
    values, reasons = spectrum_metrics_and_reasons(B, factors=_factors)
    # one sentence per distinct reason; "few_nodes" only explains the NaN that "no edges" already covers
    return {**values, "reason": "; ".join(dict.fromkeys(r.text for r in reasons.values() if r.code != "few_nodes"))}


_GAPS = ("spectral_gap", "ramanujan_gap", "weighted_spectral_gap")


def spectrum_metrics_and_reasons(B, *, factors=None) -> tuple[dict, dict]:
    """The values of :func:`block_spectrum_metrics` without ``reason`` and, per metric that is NaN, the
    :class:`~graphprune.analysis.reasons.Reason` why: codes ``"no_edges"``, ``"few_nodes"`` (the algebraic
    connectivity of fewer than two nodes with edges), ``"one_node_side"`` (no second singular value) and
    ``"average_degree"`` (numbers ``average_degree``: the Ramanujan gap needs at least 3 on both sides). The report
    reads the reasons; the public function joins their texts."""
    Bw = _as_csr(B, "B", "block_spectrum_metrics")
    Bu = Bw.copy()
    Bu.data[:] = 1.0
    out = dict(algebraic_connectivity=np.nan, spectral_gap=np.nan, ramanujan_gap=np.nan,
               weighted_spectral_gap=np.nan)
    if Bu.nnz == 0:
        none = Reason("no_edges", "no edges")
        return out, {"algebraic_connectivity": Reason("few_nodes", "fewer than two nodes with edges"),
                     **dict.fromkeys(_GAPS, none)}
    reasons = {}
    out["algebraic_connectivity"] = algebraic_connectivity(Bw, _factors=factors)
    if np.isnan(out["algebraic_connectivity"]):
        reasons["algebraic_connectivity"] = Reason("few_nodes", "fewer than two nodes with edges")
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
            d = float(min(d_out, d_in))
            reasons["ramanujan_gap"] = Reason("average_degree", f"ramanujan gap undefined: average degree {d:.2f} < 3",
                                              {"average_degree": d})
        else:
            out["ramanujan_gap"] = float(np.sqrt(d_out - 1) + np.sqrt(d_in - 1) - su[1])
    else:
        reasons.update(dict.fromkeys(_GAPS, Reason("one_node_side", "spectral gaps undefined: one node on a side")))
    return out, reasons
