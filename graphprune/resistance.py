r"""Laplacians and effective-resistance engines: exact (Schur complement / Cholesky), degree and JL approximations.

The effective resistance of an edge ``(u, v)`` is :math:`R_{uv} = (e_u - e_v)^T L^+ (e_u - e_v)`; its leverage
:math:`w_{uv} R_{uv}` is the sampling importance of spectral sparsification (Spielman & Srivastava 2011 [1]_).

Exact engine for a bipartite block
----------------------------------
Let the block have biadjacency :math:`B \in \mathbb{R}_{\ge 0}^{m \times n}` (rows :math:`U`, columns :math:`V`,
:math:`n \le m` after transposing if needed), degrees :math:`D_U = \mathrm{diag}(B 1)`,
:math:`D_V = \mathrm{diag}(B^T 1)`, and Laplacian :math:`L = \begin{pmatrix} D_U & -B \\ -B^T & D_V\end{pmatrix}`.
For the edge :math:`(i, j)` solve :math:`L x = e_i - e_j`. The first block row gives
:math:`x_U = D_U^{-1}(e_i + B x_V)`; substituting into the second,

.. math:: S x_V = -e_j + B^T D_U^{-1} e_i = r_i - e_j, \qquad S = D_V - B^T D_U^{-1} B,

with :math:`r_i = B_{i,:}^T / d_i` (the :math:`i`-th row of :math:`P = D_U^{-1} B`). :math:`S`, the Schur
complement [2]_ of :math:`D_U`, is itself the :math:`n \times n` Laplacian of a graph on :math:`V`, and
:math:`r_i - e_j \perp 1`. Then :math:`R_{ij} = x_U[i] - x_V[j] = 1/d_i + (r_i - e_j)^T S^+ (r_i - e_j)`.
Because the right-hand side is orthogonal to :math:`1`, :math:`S^+` may be replaced by
:math:`(S + \alpha 11^T)^{-1} = S^+ + 11^T/(\alpha n^2)` for any :math:`\alpha > 0` on a connected graph: the
rank-one part cancels, so one Cholesky factorisation :math:`S + \alpha 11^T = C C^T` suffices, with no
pseudo-inverse. With :math:`Z = C^{-1} P^T` and :math:`Y = C^{-T} Z = (P M)^T`, :math:`M = C^{-T} C^{-1}`:

.. math:: R_{ij} = 1/d_i + \|z_i\|^2 - 2 Y_{ji} + M_{jj}, \qquad M_{jj} = \|C^{-1} e_j\|^2.

Cost: :math:`mn^2` (SYRK for :math:`B^T D_U^{-1} B`) :math:`+ n^3/3` (POTRF) :math:`+ n^3/3` (TRTRI for the
diagonal of :math:`M`) :math:`+ 2mn^2` (two TRSM), i.e. :math:`3mn^2 + \tfrac{2}{3}n^3` flops and
:math:`O(mn)` memory, against :math:`O((m+n)^3)` for a pseudo-inverse of the whole Laplacian. Disconnected
blocks (zero weights, dead neurons, masked edges) are solved per connected component; isolated nodes are dropped.
Star components (one row or one column, e.g. the one-edge components of a depthwise convolution, one per channel)
are trees: every edge is a bridge, :math:`R_e = 1/w_e`, set for all of them in one vectorised step.

References
----------
.. [1] D. A. Spielman, N. Srivastava. "Graph Sparsification by Effective Resistances", SIAM J. Comput. 40(6),
   2011. doi:10.1137/080734029
.. [2] F. Zhang (ed.). "The Schur Complement and Its Applications", Springer 2005. doi:10.1007/b105056
"""

from __future__ import annotations

import contextlib
import logging
import math
import numbers
from collections.abc import Mapping

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import connected_components

from ._validation import (
    LAPLACIAN_METHODS,
    LAPLACIAN_SOLVERS,
    RESISTANCE_BACKENDS,
    Boolean,
    Dtype,
    Interval,
    Options,
    Seed,
    numpy_rng,
    show_typed,
    validate_params,
)
from .errors import ParameterError

__all__ = ["bipartite_resistance", "laplacian_resistance", "degree_resistance", "jl_resistance",
           "laplacian_from_biadjacency", "check_biadjacency", "choose_method", "block_method", "block_resistance",
           "available_memory", "exact_block_bytes", "exact_block_flops", "blas_threads"]

log = logging.getLogger("graphprune")

#: The exact dense engines are used by "auto" while their working memory stays under this many bytes.
EXACT_MEMORY_BUDGET = 4 * 2**30
#: ... and, for a bipartite block, while its cost (:func:`exact_block_flops`) stays under this many flops (2^34,
#: about 17 GFLOP: a 1024 x 4096 block is exact, a 2048 x 2048 one is not; see :func:`choose_method`).
EXACT_FLOP_BUDGET = 2**34


# ---------------------------------------------------------------------------------------------------------------
# bipartite blocks
# ---------------------------------------------------------------------------------------------------------------
def laplacian_from_biadjacency(B) -> np.ndarray:
    """Dense Laplacian (float64) of the bipartite graph with biadjacency ``B`` (rows first, then columns)."""
    B = np.asarray(B, dtype=np.float64)
    m, n = B.shape
    L = np.zeros((m + n, m + n))
    L[:m, m:] = -B
    L[m:, :m] = -B.T
    L[np.arange(m), np.arange(m)] = B.sum(1)
    L[np.arange(m, m + n), np.arange(m, m + n)] = B.sum(0)
    return L


_MATRIX = "a 2-D biadjacency matrix (torch.Tensor, numpy array or nested lists of numbers)"


def check_biadjacency(B, name="B", owner=None, *, what: str = _MATRIX, fix: str = ""):
    """``B`` as a non-negative 2-D tensor, or ParameterError naming ``name``, what was received and the fix.

    ``what`` (what the parameter accepts) and ``fix`` (a sentence appended to type errors) let a caller whose
    parameter takes more than a matrix say so.
    """
    of = f" of {owner}" if owner else ""
    given = B
    if not isinstance(B, torch.Tensor):
        arr = None
        if B is not None and not isinstance(B, (str, bytes, Mapping, torch.nn.Module)) and not sp.issparse(B):
            try:
                arr = np.asarray(B)
            except (TypeError, ValueError):  # ragged nested lists and the like
                arr = None
            if arr is not None and arr.dtype.kind not in "biuf":  # strings, objects, complex numbers
                arr = None
        if arr is None:
            dense = " (a scipy sparse matrix: pass B.toarray())" if sp.issparse(B) else ""
            raise ParameterError(f"The '{name}' parameter{of} must be {what}. Got {show_typed(B)}{dense} "
                                 f"instead.{fix}")
        B = torch.as_tensor(arr)
    if B.dim() != 2:
        got = show_typed(given) if B.dim() == 0 else f"a {B.dim()}-D array of shape {tuple(B.shape)}"
        raise ParameterError(f"The '{name}' parameter{of} must be {what}. Got {got} instead.{fix}")
    if B.numel() == 0:
        raise ParameterError(f"The '{name}' parameter is empty (shape {tuple(B.shape)}); nothing to compute.")
    if not B.dtype.is_floating_point:
        B = B.to(torch.float64)
    if B.device.type == "cpu":  # numpy reductions: no thread-pool wake-up for small blocks
        a = B.detach().numpy()
        lo, total = float(a.min()), float(a.sum(dtype=np.float64))
    else:
        lo, total = float(B.min()), float(B.sum(dtype=torch.float64))
    if not (lo >= 0 and math.isfinite(total)):  # two reductions cover NaN, inf and negatives
        if not bool(torch.isfinite(B).all()):
            raise ParameterError(f"The '{name}' parameter holds NaN or inf weights.")
        if bool((B < 0).any()):
            raise ParameterError(f"The '{name}' parameter holds negative weights; pass |W| (conductances are >= 0).")
        raise ParameterError(f"The '{name}' parameter's weights overflow when summed; rescale them.")
    return B


def _components(B: torch.Tensor):
    """Connected components of the bipartite graph of ``B`` as lists of (row index, column index) arrays.

    Star components (one row or one column: trees, whose every edge is a bridge) are not listed one by one: they
    come back as one entry ``("stars", edges)``, ``edges`` a bool array shaped like ``B`` flagging their edges, first
    in the list. A depthwise convolution has one such component per channel.
    """
    m, n = B.shape
    if B.device.type != "cpu" and bool((B != 0).all()):  # decide on the device before any transfer
        return [(None, None)]
    nz = B.detach().cpu().numpy() != 0
    if nz.all():
        return [(None, None)]  # complete bipartite: one component, no indexing needed
    if _connected_by_a_full_line(nz):
        return [("all", None)]  # one component holding every node: solve B as it is, NaN off the edges
    rows, cols = np.nonzero(nz)
    A = sp.coo_array((np.ones(rows.size), (rows, cols + m)), shape=(m + n, m + n))
    k, lab = connected_components(A, directed=False)
    deg = np.zeros(m + n, dtype=np.int64)
    np.add.at(deg, rows, 1)
    np.add.at(deg, cols + m, 1)
    live = deg > 0
    n_rows = np.bincount(lab[:m][live[:m]], minlength=k)  # nodes of each component on each side
    n_cols = np.bincount(lab[m:][live[m:]], minlength=k)
    star = (n_rows == 1) | (n_cols == 1)  # a tree: R_e = 1 / w_e on every edge
    out = []
    if star.any():
        edges = np.zeros((m, n), dtype=bool)
        on = star[lab[rows]]
        edges[rows[on], cols[on]] = True
        out.append(("stars", edges))
    if star.all():
        return out
    order = np.argsort(lab, kind="stable")
    bounds = np.searchsorted(lab[order], np.arange(k + 1))
    for c in np.flatnonzero(~star & (n_rows > 0)):
        members = order[bounds[c] : bounds[c + 1]]
        members = members[live[members]]
        r = members[members < m]
        q = members[members >= m] - m
        out.append((r, q))
    return out


def available_memory(device=None) -> int:
    """Bytes that can be allocated now: ``MemAvailable`` of ``/proc/meminfo`` on the CPU (the
    ``EXACT_MEMORY_BUDGET`` when unknown), free device memory on CUDA."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return EXACT_MEMORY_BUDGET


def exact_block_flops(m: int, n: int) -> int:
    """Floating-point operations of the exact engine on an ``m x n`` block: ``3 M N^2 + 2 N^3 / 3`` with
    ``N = min(m, n)``, ``M = max(m, n)`` (the Gram matrix, the Cholesky factor and its inverse, two triangular
    solves; see :func:`bipartite_resistance`)."""
    big, small = max(int(m), int(n)), min(int(m), int(n))
    return 3 * big * small * small + 2 * small**3 // 3


def exact_block_bytes(m: int, n: int, itemsize: int) -> int:
    """Working memory of the exact bipartite engine: the biadjacency, one m x n buffer (H, P^T, Z, Y in place),
    the per-edge result and the n x n factors (``n <= m``)."""
    m, n = max(m, n), min(m, n)
    return (3 * m * n + 2 * n * n) * itemsize


def _check_exact_fits(name, m, n, itemsize, device):
    need, free = exact_block_bytes(m, n, itemsize), available_memory(device)
    if need > free:
        raise ParameterError(
            f"The exact effective-resistance engine for {name} ({m} x {n}) needs about {need / 2**30:.1f} GiB, but "
            f"only {free / 2**30:.1f} GiB is available on {torch.device(device or 'cpu')}. Use method='degree' "
            "(the degree approximation), dtype=torch.float32 (half the memory), method='auto' (picks an engine "
            "that fits), or free memory.")


_BLAS_CONTROLLER = None


def blas_threads():
    """A context limiting the BLAS/LAPACK thread pools to ``torch.get_num_threads()``, so that scipy's engine and
    torch use the same number of cores (no oversubscription when the caller lowered torch's threads); a no-op
    without threadpoolctl.

    The loaded libraries are looked up once per process (threadpoolctl reads ``/proc/self/maps``, about 2 ms):
    a block with thousands of components (a depthwise convolution) enters this context once, not per component.
    """
    global _BLAS_CONTROLLER
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        import contextlib

        return contextlib.nullcontext()
    if _BLAS_CONTROLLER is None:
        import scipy.linalg  # noqa: F401  (scipy's BLAS/LAPACK are loaded before the pools are looked up)

        _BLAS_CONTROLLER = ThreadpoolController()
    return _BLAS_CONTROLLER.limit(limits=torch.get_num_threads(), user_api="blas")


def _connected_by_a_full_line(nz: np.ndarray) -> bool:
    """True when a row (or column) is joined to every column (row) and no node is isolated: then every node
    reaches that line in at most two steps, so the bipartite graph is connected (an O(mn) test that spares
    dense-but-not-complete blocks, e.g. bfloat16 weights with a few exact zeros, the component search)."""
    if not nz.any(axis=1).all() or not nz.any(axis=0).all():
        return False
    return bool(nz.all(axis=1).any() or nz.all(axis=0).any())


def _solve_connected_cpu(B: np.ndarray, overwrite: bool = False) -> np.ndarray:
    """Exact resistances of a connected bipartite graph, ``n <= m`` (LAPACK/BLAS through scipy).

    Working memory: one ``m x n`` buffer (H, then P^T, then Z, then Y in place) plus ``n x n`` factors; with
    ``overwrite`` that buffer is ``B`` itself (a C-ordered array the caller gives up), so the only ``m x n`` array
    is the input, which comes back holding the result.
    """
    from scipy.linalg import blas, lapack

    m, n = B.shape
    f = "d" if B.dtype == np.float64 else "s"
    syrk, trsm = getattr(blas, f + "syrk"), getattr(blas, f + "trsm")
    potrf, trtri = getattr(lapack, f + "potrf"), getattr(lapack, f + "trtri")
    d = B.sum(1)
    dv = B.sum(0)
    scale = (1.0 / np.sqrt(d)).astype(B.dtype)[:, None]
    if overwrite and B.flags.c_contiguous:
        X = B
        X *= scale  # H = D^-1/2 B in B's own storage (the same products as np.multiply)
    else:
        X = np.multiply(B, scale)  # H = D^-1/2 B (C order, m x n)
    del scale
    S = syrk(-1.0, X.T, lower=1)  # -(H^T H) = -(B^T D^-1 B); X.T is Fortran-ordered, no copy
    S[np.diag_indices(n)] += dv
    S += max(float(dv.mean()), float(np.finfo(B.dtype).tiny)) / n  # + alpha 11^T, alpha = mean(dv) / n
    C, info = potrf(S, lower=1, overwrite_a=1, clean=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"Cholesky failed (info={info}); the block may be numerically disconnected.")
    del S
    Ci, info = trtri(C, lower=1)
    Mjj = np.einsum("ij,ij->j", Ci, Ci)  # ||C^-1 e_j||^2 = diag(M)
    del Ci
    X *= (1.0 / np.sqrt(d)).astype(B.dtype)[:, None]  # P = D^-1 B, in place
    Z = trsm(1.0, C, X.T, lower=1, overwrite_b=1)  # C^-1 P^T, in place (n x m, Fortran)
    q = np.einsum("ij,ij->j", Z, Z)  # ||z_i||^2
    Y = trsm(1.0, C, Z, lower=1, trans_a=1, overwrite_b=1)  # C^-T Z = (P M)^T, in place
    R = Y.T  # m x n, C order
    R *= -2.0
    R += (1.0 / d + q).astype(B.dtype)[:, None]
    R += Mjj[None, :]
    return R


def _solve_connected_torch(B: torch.Tensor) -> torch.Tensor:
    """Same algorithm with torch linear algebra (any device, CUDA included)."""
    m, n = B.shape
    d = B.sum(1)
    dv = B.sum(0)
    P = B / d[:, None]
    H = B / d.sqrt()[:, None]
    S = -(H.T @ H)
    S.diagonal().add_(dv)
    S += max(float(dv.mean()), torch.finfo(B.dtype).tiny) / n
    C = torch.linalg.cholesky(S)
    eye = torch.eye(n, dtype=B.dtype, device=B.device)
    Ci = torch.linalg.solve_triangular(C, eye, upper=False)
    Mjj = (Ci * Ci).sum(0)
    del Ci
    Z = torch.linalg.solve_triangular(C, P.T, upper=False)
    q = (Z * Z).sum(0)
    Y = torch.linalg.solve_triangular(C.T, Z, upper=True)
    return (1.0 / d + q)[:, None] - 2.0 * Y.T + Mjj[None, :]


@validate_params({"dtype": [Dtype()], "backend": [Options(RESISTANCE_BACKENDS)], "overwrite": [Boolean()]})
def bipartite_resistance(B, *, dtype=torch.float64, backend: str = "auto", overwrite: bool = False) -> torch.Tensor:
    r"""Exact effective resistance of every edge of a bipartite graph given by its biadjacency.

    Parameters
    ----------
    B : torch.Tensor or array_like, shape (m, n)
        Non-negative conductances (``|W|``); ``B[i, j]`` is the edge between row node ``i`` and column node ``j``.
        Zero entries are absent edges. Parallel edges must already be summed.
    dtype : torch.dtype, default torch.float64
        ``torch.float32`` halves memory and is about twice as fast, at roughly 1e-4 relative error.
    backend : {"auto", "scipy", "torch"}
        ``"auto"`` uses LAPACK through scipy for CPU tensors and torch for other devices (CUDA).
    overwrite : bool, default False
        Let the CPU engine use ``B``'s storage as its ``m x n`` working buffer (``B``'s values are destroyed; the
        result may share its storage), like scipy's ``overwrite_a``: one ``m x n`` array instead of two. Only
        when ``B`` is a C-contiguous tensor already of ``dtype``; otherwise ``B`` is copied as usual.

    Returns
    -------
    torch.Tensor, shape (m, n)
        ``R[i, j]`` for every edge, NaN where ``B[i, j] == 0`` (no edge). On ``B``'s device.

    Raises
    ------
    ParameterError
        ``B`` is not 2-D, is empty, or holds negative, NaN or inf entries.

    Notes
    -----
    Schur complement on the smaller side, one Cholesky factorisation, no pseudo-inverse (derivation in the module
    docstring): :math:`3mn^2 + \tfrac23 n^3` flops for ``n <= m``. Components are solved separately; an isolated
    node is fine. Does not modify ``B`` unless ``overwrite=True``.

    References
    ----------
    .. [1] D. A. Spielman, N. Srivastava. "Graph Sparsification by Effective Resistances", SIAM J. Comput. 40(6),
       2011. doi:10.1137/080734029

    Examples
    --------
    >>> import torch
    >>> from graphprune.resistance import bipartite_resistance
    >>> bipartite_resistance(torch.ones(2, 2))  # a 4-cycle: R = 3/4 on every edge
    tensor([[0.7500, 0.7500],
            [0.7500, 0.7500]], dtype=torch.float64)
    """
    B = check_biadjacency(B)
    device = B.device
    given = B.data_ptr()
    B = B.detach().to(dtype)
    own = bool(overwrite) or B.data_ptr() != given  # a converted copy is ours to overwrite too
    transposed = B.shape[1] > B.shape[0]
    if transposed:
        B = B.T
    use_scipy = backend == "scipy" or (backend == "auto" and device.type == "cpu")

    def solve(sub, own):
        flip = sub.shape[1] > sub.shape[0]
        sub = sub.T if flip else sub
        if use_scipy:  # inside one blas_threads() context for the whole block (below)
            a = sub.cpu().numpy()
            if not a.flags.c_contiguous:
                a, own = np.ascontiguousarray(a), True  # a copy: ours to overwrite
            R = torch.from_numpy(_solve_connected_cpu(a, overwrite=own)).to(device)
        else:
            R = _solve_connected_torch(sub.contiguous())
        return R.T if flip else R

    comps = _components(B)
    first = comps[0][0] if comps else ()
    with blas_threads() if use_scipy else contextlib.nullcontext():
        if first is None:  # complete bipartite block (a dense layer): no indexing, no copies
            out = solve(B, own)
        elif isinstance(first, str) and first == "all":  # connected with some zeros: no indexing, NaN off the edges
            absent = B == 0  # before the engine may overwrite B
            out = solve(B, own)
            out.masked_fill_(absent, float("nan"))
        else:
            out = torch.full(B.shape, float("nan"), dtype=dtype, device=device)
            for rows, cols in comps:
                if isinstance(rows, str):  # every star at once: each edge is a bridge, R = 1 / w exactly
                    on = torch.from_numpy(cols).to(device)
                    out[on] = 1.0 / B[on]
                    continue
                ri = torch.as_tensor(rows, device=device)
                ci = torch.as_tensor(cols, device=device)
                out[ri[:, None], ci[None, :]] = solve(B[ri][:, ci], True)  # an indexed copy: ours
            out.masked_fill_(B == 0, float("nan"))
    return out.T if transposed else out


# ---------------------------------------------------------------------------------------------------------------
# general graphs (the whole multipartite graph)
# ---------------------------------------------------------------------------------------------------------------
def _as_csr(L):
    if sp.issparse(L):
        return sp.csr_array(L, dtype=np.float64)
    return sp.csr_array(np.asarray(L, dtype=np.float64))


def _scatter_rows(Y, idx, vals):
    """``Y[idx] += vals`` with repeated indices summed (sparse matrix product, much faster than np.add.at)."""
    S = sp.csr_array((np.ones(idx.size), (idx, np.arange(idx.size))), shape=(Y.shape[0], idx.size))
    Y += S @ vals


def _block_pcg(A, Bm, dinv, tol, maxiter):
    """Jacobi-preconditioned conjugate gradients on all columns of ``Bm`` at once (A symmetric PSD, B in range)."""
    X = np.zeros_like(Bm)
    R = Bm.copy()
    Z = R * dinv[:, None]
    P = Z.copy()
    rz = np.einsum("ij,ij->j", R, Z)
    bnorm = np.maximum(np.linalg.norm(Bm, axis=0), np.finfo(float).tiny)
    for _ in range(maxiter):
        AP = np.asarray(A @ P)
        pap = np.einsum("ij,ij->j", P, AP)
        alpha = np.divide(rz, pap, out=np.zeros_like(rz), where=pap > 0)
        X += P * alpha
        R -= AP * alpha
        if (np.linalg.norm(R, axis=0) <= tol * bnorm).all():
            break
        Z = R * dinv[:, None]
        rz_new = np.einsum("ij,ij->j", R, Z)
        beta = np.divide(rz_new, rz, out=np.zeros_like(rz), where=rz > 0)
        rz = rz_new
        P = Z + P * beta
    return X


@validate_params({"method": [Options(LAPLACIAN_METHODS)], "jl_dim": [Interval(numbers.Integral, 1, None), None],
                  "eps": [Interval(numbers.Real, 0, 1, closed="right")], "seed": [Seed()],
                  "tol": [Interval(numbers.Real, 0, None, closed="neither")], "solver": [Options(LAPLACIAN_SOLVERS)]})
def laplacian_resistance(L, edges, *, method: str = "exact", jl_dim: int | None = None, eps: float = 0.3,
                         seed=0, tol: float = 1e-10, solver: str = "lu"):
    """Effective resistance of given node pairs of a general weighted graph from its Laplacian.

    Parameters
    ----------
    L : scipy.sparse array or ndarray, shape (N, N)
        Combinatorial Laplacian (symmetric, zero row sums).
    edges : tuple of ndarray (u, v)
        Node pairs to evaluate.
    method : {"exact", "jl"}
        ``"exact"``: per connected component, a dense Cholesky of the grounded Laplacian (a node removed,
        ``O(N^3)``). ``"jl"``: Spielman-Srivastava random projection, ``R_uv ~ ||Z (e_u - e_v)||^2`` with
        ``Z = Q W^{1/2} B L^+`` and ``k = ceil(24 log N / eps^2)`` (or ``jl_dim``) rows, solved per component
        with Jacobi-preconditioned block conjugate gradients (``solver="cg"``, relative residual 1e-6) or a
        sparse LU factorisation of the grounded Laplacian (``solver="lu"``); relative error about ``eps``.
    seed : int, numpy.random.Generator or torch.Generator, default 0
        Seed of the random projection (``"jl"`` only). ``None`` is refused: the same seed gives the same result.

    Returns
    -------
    numpy.ndarray
        ``R`` per pair; ``inf`` when ``u`` and ``v`` lie in different components (no such edge exists).

    References
    ----------
    .. [1] D. A. Spielman, N. Srivastava. "Graph Sparsification by Effective Resistances", SIAM J. Comput. 40(6),
       2011. doi:10.1137/080734029 (Theorem 2 and Section 4: the projection).
    """
    L = _as_csr(L)
    u, v = (np.asarray(x, dtype=np.int64) for x in edges)
    N = L.shape[0]
    key = np.minimum(u, v) * N + np.maximum(u, v)
    uniq, inverse = np.unique(key, return_inverse=True)
    if uniq.size < key.size:  # parallel edges share their pair's resistance: solve each pair once
        r = laplacian_resistance(L, (uniq // N, uniq % N), method=method, jl_dim=jl_dim, eps=eps, seed=seed,
                                 tol=tol, solver=solver)
        return r[inverse.ravel()]
    A = L.copy()
    A.setdiag(0)
    A.eliminate_zeros()
    k, lab = connected_components(A, directed=False)
    R = np.full(u.shape[0], np.inf)
    same = lab[u] == lab[v]
    R[same & (u == v)] = 0.0
    if method == "jl":
        rng = numpy_rng(seed, owner="laplacian_resistance")
        kdim = int(jl_dim or math.ceil(24 * math.log(max(N, 2)) / eps**2))
        # Q W^1/2 B, with B the signed edge-vertex incidence of the upper triangle of A
        Au = sp.triu(A, k=1).tocoo()
        sw = np.sqrt(np.abs(Au.data))  # off-diagonal Laplacian entries are -w
        # Y = Q W^1/2 B (kdim x N), B the signed edge-node incidence (+1 at u, -1 at v), Q random +-1/sqrt(k);
        # built in chunks of edges so Q is never held whole
        Y = np.zeros((N, kdim))
        step = max(1, 2**24 // kdim)
        for a in range(0, Au.nnz, step):
            rows, cols, w = Au.row[a : a + step], Au.col[a : a + step], sw[a : a + step]
            Q = (rng.integers(0, 2, size=(w.size, kdim), dtype=np.int8) * 2 - 1) * (w / math.sqrt(kdim))[:, None]
            _scatter_rows(Y, rows, Q)
            _scatter_rows(Y, cols, -Q)
        Y = Y.T
    for c in range(k):
        nodes = np.flatnonzero(lab == c)
        sel = np.flatnonzero(same & (lab[u] == c) & (u != v))
        if sel.size == 0 or nodes.size < 2:
            continue
        Lc = L[nodes][:, nodes]
        local = np.full(N, -1, dtype=np.int64)
        local[nodes] = np.arange(nodes.size)
        lu, lv = local[u[sel]], local[v[sel]]
        ground = nodes.size - 1  # remove the last node: the grounded Laplacian is SPD on a connected component
        if method == "exact":
            from scipy.linalg import lapack

            M = np.zeros((nodes.size, nodes.size), order="F")  # the ground node keeps potential 0
            M[:ground, :ground] = Lc[:ground][:, :ground].toarray()
            C, info = lapack.dpotrf(M[:ground, :ground], lower=1, overwrite_a=1)
            if info != 0:
                raise np.linalg.LinAlgError(f"Cholesky of the grounded Laplacian failed (info={info}).")
            Minv, info = lapack.dpotri(C, lower=1, overwrite_c=1)  # lower triangle of the inverse
            Minv = np.tril(Minv)
            M[:ground, :ground] = Minv + np.tril(Minv, -1).T
            R[sel] = M[lu, lu] + M[lv, lv] - 2 * M[lu, lv]
        else:
            Yc = Y[:, nodes]
            Yc = Yc - Yc.mean(1, keepdims=True)  # project the rows onto the range of L (1-perp)
            Zc = np.zeros((kdim, nodes.size))
            if solver == "lu":
                from scipy.sparse.linalg import splu

                fac = splu(sp.csc_matrix(Lc[:ground][:, :ground]))
                Zc[:, :ground] = fac.solve(np.ascontiguousarray(Yc[:, :ground].T)).T
            else:
                Zc[:] = _block_pcg(Lc, np.ascontiguousarray(Yc.T), 1.0 / Lc.diagonal(), 1e-6, 10 * nodes.size).T
            for a in range(0, sel.size, 8192):  # bounded memory: kdim x 8192 at a time
                diff = Zc[:, lu[a : a + 8192]] - Zc[:, lv[a : a + 8192]]
                R[sel[a : a + 8192]] = np.einsum("ij,ij->j", diff, diff)
    return R


def jl_resistance(L, edges, *, eps: float = 0.3, jl_dim: int | None = None, seed=0):
    """Spielman-Srivastava random-projection approximation; see :func:`laplacian_resistance`."""
    return laplacian_resistance(L, edges, method="jl", eps=eps, jl_dim=jl_dim, seed=seed)


@validate_params({"overwrite": [Boolean()]})
def degree_resistance(B, *, overwrite: bool = False) -> torch.Tensor:
    """Degree approximation ``R_ij ~ 1/d_i + 1/d_j`` (weighted degrees) for a biadjacency; NaN off the edges.

    Exact for a star and close for dense layers: on the complete bipartite graph :math:`K_{m,n}` with unit
    weights the exact value is :math:`(m + n - 1)/(mn)` against :math:`1/n + 1/m = (m + n)/(mn)`. With
    ``overwrite`` (a floating ``B`` the caller gives up) the result is written into ``B``'s storage: one bool array
    besides ``B`` (the same numbers: ``(0 + 1/d_i) + 1/d_j`` is ``1/d_i + 1/d_j`` in IEEE arithmetic).
    """
    B = check_biadjacency(B)
    d = B.sum(1, keepdim=True)
    e = B.sum(0, keepdim=True)
    if overwrite and B.is_floating_point():
        absent = B == 0
        R = B.zero_().add_(1.0 / d).add_(1.0 / e)
        return R.masked_fill_(absent, float("nan"))
    R = 1.0 / d + 1.0 / e
    return R.masked_fill(B == 0, float("nan"))


# ---------------------------------------------------------------------------------------------------------------
# choosing an engine (the graph-aware front door is graphprune.graph_resistance.effective_resistance)
# ---------------------------------------------------------------------------------------------------------------
def choose_method(n_rows: int, n_cols: int | None = None, *, itemsize: int = 8, budget: int | None = None,
                  flop_budget: int | None = None):
    """Pick an engine from a memory and time estimate; return ``(method, reason)``.

    For a block (``n_cols`` given) the exact engine needs about ``4 m n`` numbers and :func:`exact_block_flops`
    (``3 M N^2 + 2 N^3 / 3``) operations; a block past either budget (``budget`` bytes, default
    :data:`EXACT_MEMORY_BUDGET`, 4 GiB; ``flop_budget``, default :data:`EXACT_FLOP_BUDGET`, 2^34 = 17.2 GFLOP) gets
    the degree approximation. For a whole graph of ``N`` nodes the dense exact engine needs ``2 N^2`` numbers and
    ``N^3/3`` flops; past the budget (or N > 12000) it gets JL projections.

    Notes
    -----
    The time rule (2026-12) makes the default usable at LLM size: a 1024 x 4096 block (13.6 GFLOP, about 1-3 s on
    the 2-core reference machine) is still exact, a 2048 x 2048 one (31.5 GFLOP) is not, nor is any block of a
    Llama-2-7B (4096 x 4096: 252 GFLOP; 11008 x 4096: 600 GFLOP; about 90 TFLOP over the model, hours on a CPU).
    Every block of the study's models, of ResNets, of ViT-B/L, Swin-B and ConvNeXt-B (at most 1024 x 4096), of
    BERT-large and of GPT-2 small and medium's layers stays exact; the degree approximation takes VGG's and
    AlexNet's classifiers (4096 x 25088: 1.3 TFLOP), ConvNeXt-L's and ViT-H's MLPs (46 and 27 GFLOP), GPT-2
    large's MLPs and GPT-2's 50257 x 768 head (89 GFLOP). The rule depends on the
    shape only, never on the device or the memory free, so masks are the same everywhere (``resistance="exact"``
    forces exact, e.g. on a GPU).

    Why the approximation is safe there, measured by ``benchmarks/bench_auto.py`` (the default at sparsities
    0.5 and 0.99, random-init bfloat16 blocks; 2026-12). For a large dense bipartite graph the resistance
    concentrates on ``1/d_i + 1/d_j`` [1]_ and the error shrinks as the block grows: the total variation distance
    between the default's sampling distributions ``p_e ~ |w_e| R_e`` under the two engines is 1.3e-4 at
    1024 x 4096, 1.6e-4 at 2048 x 2048, 8.1e-5 at 4096 x 4096 and 4.4e-5 at 11008 x 4096 (median relative
    resistance error 7.6e-5 to 2.8e-4), against 3.3e-3 to 7.6e-3 between the default and magnitude's
    ``p_e ~ |w_e|``; at 2048 x 2048 and above the masks share 0.9999 or more of their edges (exact with another
    seed shares 0.04 to 0.63), at a tenth to a fifth of the time. On the trained byte-level Llama of the LM study
    (28 blocks of at most 512 x 192, below the budget, pruned with ``resistance="degree"`` to measure it) the TV
    distance is larger, median 1.7e-3 (max 2.3e-3), still 30 times below magnitude's (median 5.2e-2), and the
    held-out perplexity per byte moves from 4.565 to 4.581, against 4.457 for exact with another seed and 3.098
    for magnitude. Trained models of LLM size were not measured: where that matters, compare with
    ``resistance="exact"`` on a few blocks.

    References
    ----------
    .. [1] U. von Luxburg, A. Radl, M. Hein. "Hitting and commute times in large random neighborhood graphs",
       J. Mach. Learn. Res. 15:1751-1798, 2014. https://jmlr.org/papers/v15/vonluxburg14a.html
    """
    budget = EXACT_MEMORY_BUDGET if budget is None else budget
    flop_budget = EXACT_FLOP_BUDGET if flop_budget is None else flop_budget
    if n_cols is not None:
        need = 4 * n_rows * n_cols * itemsize
        if need > budget:
            return "degree", f"degree: exact would need ~{need / 2**30:.1f} GiB (budget {budget / 2**30:.1f} GiB)"
        flops = exact_block_flops(n_rows, n_cols)
        if flops > flop_budget:
            return "degree", (f"degree: exact would cost ~{flops / 1e9:.0f} GFLOP for a {n_rows} x {n_cols} block "
                              f"(budget {flop_budget / 1e9:.1f} GFLOP; resistance='exact' forces it)")
        return "exact", (f"exact: ~{need / 2**20:.0f} MiB and ~{flops / 1e9:.1f} GFLOP, within the "
                         f"{budget / 2**30:.1f} GiB and {flop_budget / 1e9:.1f} GFLOP budgets")
    need = 2 * n_rows * n_rows * 8
    if need <= budget and n_rows <= 12000:
        return "exact", f"exact: N={n_rows}, ~{need / 2**20:.0f} MiB dense, ~{n_rows**3 / 3e9:.1f} GFLOP"
    return "jl", f"jl: N={n_rows} too large for a dense factorisation (~{need / 2**30:.1f} GiB)"


def block_method(method: str, name: str, m: int, n: int, *, dtype=torch.float64, device=None) -> str:
    """The engine for one ``m x n`` bipartite block, decided before anything is allocated.

    ``"auto"`` takes :func:`choose_method`'s pick, then falls back to the degree approximation (and logs why on
    the ``graphprune`` logger) when exact would not fit in the memory available now; an explicit ``"exact"`` that
    cannot fit raises ParameterError (``name`` names the block in the message); ``"jl"`` is refused (it is a
    whole-graph method).
    """
    itemsize = torch.finfo(dtype).bits // 8
    if method == "jl":
        raise ParameterError("method='jl' applies to whole graphs; use 'exact' or 'degree' for a biadjacency.")
    if method == "exact":
        _check_exact_fits(name, m, n, itemsize, device)
        return method
    if method != "auto":
        return method
    chosen, why = choose_method(m, n, itemsize=itemsize)
    if chosen == "exact":
        need, free = exact_block_bytes(m, n, itemsize), available_memory(device)
        if need > free:
            chosen = "degree"
            why = (f"degree: exact would need ~{need / 2**30:.1f} GiB for {name} but {free / 2**30:.1f} GiB is "
                   "available")
    log.info("effective_resistance: %s", why)
    return chosen


def block_resistance(B, method: str, *, dtype=torch.float64, backend: str = "auto", overwrite: bool = False):
    """Effective resistances of a biadjacency with an engine :func:`block_method` picked: ``"exact"``
    (:func:`bipartite_resistance`, which may use ``B`` as its buffer with ``overwrite``) or ``"degree"``
    (:func:`degree_resistance` in ``dtype``); ``(m, n)``, NaN off the edges."""
    if method == "exact":
        return bipartite_resistance(B, dtype=dtype, backend=backend, overwrite=overwrite)
    given = B.data_ptr()
    B = B.to(dtype)
    return degree_resistance(B, overwrite=bool(overwrite) or B.data_ptr() != given)  # a converted copy is ours

