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

__all__ = ["spectral_similarity", "block_spectral_similarity"]


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
