"""Data-aware one-shot pruning of trained networks: Wanda, RIA, SparseGPT and the flow-graph method.

Every sparsifier here takes the trained ``model`` the graph was exported from and calibration ``data`` (a tensor
of inputs, a dict of tensors for a Hugging Face model, or a DataLoader), and prunes block by block in the
graph's topological order, gathering each stage's input statistics on the model with the earlier stages already
pruned (:mod:`graphprune.calibrate`). Through :func:`graphprune.prune` with ``permanent=True`` this happens in the
model itself (no copy; SparseGPT's and ``flow``'s repaired weights are written in place); otherwise on a private
copy, whose repaired weights are left in ``weights_`` and written back by :func:`graphprune.prune`.

All four are written from their papers (cited in each class).
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np
import torch

from .._validation import CRITERIA, REPAIRS, TARGETS, Boolean, InstanceOf, Interval, Options
from ..calibrate import (
    StageRunner,
    check_batches,
    check_model,
    column_scale,
    from_matrix,
    masked_copy,
    param_of,
    stages,
    to_matrix,
)
from ..errors import ParameterError
from .base import BlockContext
from .registry import register
from .score import ScoreSparsifier, nm_mask, row_shares, select
from .units import _progress, _unit_mask, _warn_zero_block, user_stacklevel

__all__ = ["CalibratedSparsifier", "WandaSparsifier", "RIASparsifier", "SparseGPTSparsifier", "FlowSparsifier",
           "obs_prune", "ls_repair", "dense_target"]


class CalibratedSparsifier(ScoreSparsifier):
    """Base class of data-aware sparsifiers: the sequential calibration driver.

    A subclass writes :meth:`score` (reading ``ctx.stats``, the block's :class:`~graphprune.calibrate.InputStats`)
    or :meth:`compute_mask`; a compute_mask that also repairs the kept weights sets ``ctx.repaired`` (the new
    weights, shaped like the block). Set :attr:`needs_gram` when ``ctx.stats.gram`` is needed.

    Parameters
    ----------
    model : torch.nn.Module
        The model the graph was exported from.
    data : tensor, dict of tensors or iterable of batches
        Calibration inputs (:func:`graphprune.calibrate.check_batches`).
    **kwargs
        :class:`~graphprune.sparsify.score.ScoreSparsifier`'s parameters (``comparison``, ``nm``, ...).
    """

    needs_data = True
    needs_gram = False
    distributable = False
    supports_global = False  # scores of later blocks exist only after earlier blocks are pruned

    _parameter_constraints = {
        "model": [InstanceOf(torch.nn.Module, "the torch.nn.Module the graph was exported from")],
    }

    def __init__(self, sparsity=None, *, model=None, data=None, **kwargs):
        super().__init__(sparsity, **kwargs)
        self.model = model
        self.data = data

    def _why_serial(self):
        return "each stage's statistics come from the model with the earlier stages already pruned"

    def _validate_extra(self):
        super()._validate_extra()
        cls = type(self).__name__
        if self.model is None:
            raise ParameterError(f"The 'model' parameter of {cls} is needed: {cls} runs the calibration data "
                                 "through the model the graph was exported from. Pass model=<that model>.")
        self._batches = check_batches(self.data, owner=cls)

    def prepare(self, graph):
        cls = type(self).__name__
        check_model(self.model, graph, owner=cls)
        in_place = getattr(self, "_in_place", False)
        self._work = self.model if in_place else masked_copy(self.model, graph)[0]
        self.weights_ = {}
        self._runner = StageRunner(self._work, self._batches, owner=cls, reference=self._reference(in_place))
        self._runner.check(self.units(graph))  # the data fits the whole model before anything is written

    def _reference(self, in_place: bool):
        """A model run beside the working one on the same batches (``ctx.stats.cross``); None by default."""
        return None

    def release(self):
        self._work = None
        self._runner = None

    def _blocks(self, graph, units, d, ss, *, progress=None):
        if getattr(self, "executor", None) is not None:
            warnings.warn(f"{type(self).__name__} runs serially in this process, not on the executor "
                          f"({self._why_serial()}).", RuntimeWarning, stacklevel=user_stacklevel())
        todo, ks, seeds = self._plan(graph, units, d, ss)
        show = self.progress if progress is None else progress
        for stage in _progress(stages(graph, todo), show, f"{type(self).__name__} stages"):
            stats = self._runner.gather(stage, gram=self.needs_gram)
            for b in stage:
                ctx = self._context(graph, b, seeds[b.name])
                ctx.stats = stats.pop(b.name)
                m, zero = _unit_mask(self, ctx, int(ks[b.name]))
                if zero:
                    _warn_zero_block(self, b, *zero)
                self._write(b, m, ctx.repaired)
                del ctx
                yield b, m

    def _write(self, b, m, new):
        """Zero the pruned weights of ``b`` in the working model and write the repaired ones, if any."""
        p = param_of(self._work, b.param)
        with torch.no_grad():
            view = b.rows(p)
            if new is not None:
                view.copy_(new.to(view.device, view.dtype))
            view.mul_(m.to(view.device, view.dtype))
        if new is not None and not getattr(self, "_in_place", False):
            self.weights_[b.param] = p


@register
class WandaSparsifier(CalibratedSparsifier):
    """Wanda: keep the largest ``|W_ij| * ||X_j||`` in every output row.

    ``||X_j||`` is the l2 norm of input feature ``j`` over every calibration token (position), gathered
    sequentially. No weight is updated.

    Parameters
    ----------
    model, data
        As for :class:`CalibratedSparsifier`.
    comparison : {"row", "block"}, default "row"
        The paper compares weights per output row.
    nm : (int, int) or str, optional
        N:M sparsity (the paper's 2:4 and 4:8).

    References
    ----------
    .. [1] M. Sun, Z. Liu, A. Bair, J. Z. Kolter. "A Simple and Effective Pruning Approach for Large Language
       Models", ICLR 2024. doi:10.48550/arXiv.2306.11695
    """

    name = "wanda"
    default_comparison = "row"

    def score(self, ctx: BlockContext) -> torch.Tensor:
        b = ctx.block
        W = to_matrix(b, ctx.weight.abs().to(torch.float64))  # a new tensor (abs): scaled in place
        return from_matrix(b, W.mul_(column_scale(b, ctx.stats.norms)))


@register
class RIASparsifier(CalibratedSparsifier):
    """RIA: relative importance times activations, ``(|W_ij| / sum_k |W_kj| + |W_ij| / sum_k |W_ik|) * ||X_j||^a``.

    The first factor is ``|w_e| (1/d_j + 1/d_i)`` with ``d`` the weighted degrees of the block's bipartite graph
    (input node ``j``, output node ``i``): the degree approximation of an edge's leverage ``w_e R_e``.

    Parameters
    ----------
    model, data
        As for :class:`CalibratedSparsifier`.
    power : float, default 0.5
        The exponent ``a`` of the activation norm (the paper's choice).
    comparison : {"row", "block"}, default "row"
        Per output row, as in Wanda.
    nm : (int, int) or str, optional
        N:M sparsity (the paper also permutes channels for N:M; not done here).

    References
    ----------
    .. [1] Y. Zhang, H. Bai, H. Lin, J. Zhao, L. Hou, C. V. Cannistraci. "Plug-and-Play: An Efficient Post-training
       Pruning Method for Large Language Models", ICLR 2024. https://openreview.net/forum?id=Tr0lPx9woF
    """

    name = "ria"
    default_comparison = "row"
    _parameter_constraints = {"power": [Interval(numbers.Real, 0, None, closed="left")]}

    def __init__(self, sparsity=None, *, power=0.5, **kwargs):
        super().__init__(sparsity, **kwargs)
        self.power = power

    def score(self, ctx: BlockContext) -> torch.Tensor:
        b = ctx.block
        W = to_matrix(b, ctx.weight.abs().to(torch.float64))
        col, row = W.sum(0, keepdim=True), W.sum(1, keepdim=True)
        ri = torch.where(col > 0, W / col.clamp_min(1e-300), 0.0) + torch.where(row > 0, W / row.clamp_min(1e-300),
                                                                                 0.0)
        return from_matrix(b, ri * column_scale(b, ctx.stats.norms) ** float(self.power))


def _damped(H: torch.Tensor, W: torch.Tensor, damp: float):
    """SparseGPT's conditioning: dead inputs (zero diagonal) get ``H_jj = 1`` and their weights 0; then
    ``lam = damp * mean(diag H)`` is added to the diagonal. Returns ``(H + lam I, lam)``."""
    H = H.clone()
    dead = torch.diagonal(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    lam = damp * float(torch.diagonal(H).mean())
    H.diagonal().add_(lam)
    return H, lam


def obs_prune(W: torch.Tensor, H: torch.Tensor, avail: torch.Tensor, k: int, *, blocksize: int = 128,
              damp: float = 0.01, nm=None, fixed: torch.Tensor | None = None):
    """SparseGPT's sweep: prune ``W`` (rows, cols) column by column with optimal-brain-surgeon updates.

    Parameters
    ----------
    W : torch.Tensor
        float64 ``(rows, cols)``, not modified.
    H : torch.Tensor
        ``X^T X``, ``(cols, cols)``.
    avail : torch.Tensor
        Bool ``(rows, cols)``: edges that may stay (the others are pruned first).
    k : int
        Edges to keep in all (split over column blocks by :func:`row_shares` of their available counts).
    blocksize, damp : int, float
        Columns per lazy-update block (128) and the dampening fraction (1%), as in the paper.
    nm : (int, int), optional
        N:M selection within each row, every ``m`` columns, on the updated weights.
    fixed : torch.Tensor, optional
        A bool keep-mask chosen beforehand: no selection, only the updates (OBS repair of a given mask).

    Returns
    -------
    (keep, W_new) : bool and float64 tensors ``(rows, cols)``; ``W_new`` is zero where ``keep`` is False.

    Notes
    -----
    With ``U`` the upper Cholesky factor of ``H^{-1}``, pruning column ``i`` of row ``r`` costs
    ``w_ri^2 / U_ii^2`` and moves the error ``(w_ri - q_ri) / U_ii`` onto the later columns along ``U[i, i:]``
    (the OBS update restricted to the not yet processed columns). Mask selection inside each block of columns
    keeps that block's share of ``k`` by the cost above, adaptively on the updated weights.
    ``O(cols^3 + rows cols^2)``.

    References
    ----------
    .. [1] E. Frantar, D. Alistarh. "SparseGPT: Massive Language Models Can Be Accurately Pruned in One-Shot",
       ICML 2023. doi:10.48550/arXiv.2301.00774
    .. [2] B. Hassibi, D. G. Stork. "Second order derivatives for network pruning: Optimal Brain Surgeon",
       NeurIPS 1992.
    """
    W = W.clone()
    rows, cols = W.shape
    H, _ = _damped(H, W, damp)
    L = torch.linalg.cholesky(H)
    Hinv = torch.cholesky_inverse(L)
    U = torch.linalg.cholesky(Hinv, upper=True)
    keep = torch.zeros(rows, cols, dtype=torch.bool)
    starts = list(range(0, cols, blocksize))
    if fixed is None and nm is None:
        shares = row_shares(np.array([int(avail[:, a : a + blocksize].sum()) for a in starts]), k)
    for bi, a in enumerate(starts):
        z = min(a + blocksize, cols)
        W1 = W[:, a:z].clone()
        U1 = U[a:z, a:z]
        d = torch.diagonal(U1)
        E1 = torch.zeros_like(W1)
        if fixed is not None:
            K1 = fixed[:, a:z].clone()
        elif nm is None:
            cost = (W1 * W1) / (d * d).reshape(1, -1)
            cost = cost.masked_fill(~avail[:, a:z], -torch.inf)
            K1 = select(cost, avail[:, a:z], int(shares[bi]), block=_MatrixBlock(), comparison="block")
        else:
            K1 = torch.zeros_like(W1, dtype=torch.bool)
        for i in range(z - a):
            if nm is not None and fixed is None and i % nm[1] == 0:
                j = min(i + nm[1], z - a)
                cost = (W1[:, i:j] ** 2) / (d[i:j] ** 2).reshape(1, -1)
                K1[:, i:j] = nm_mask(cost, avail[:, a + i : a + j], *nm)
            w = W1[:, i]
            q = torch.where(K1[:, i], w, 0.0)
            err = (w - q) / d[i]
            W1[:, i:] -= err.reshape(-1, 1) * U1[i, i:].reshape(1, -1)
            W1[:, i] = q
            E1[:, i] = err
        W[:, a:z] = W1
        W[:, z:] -= E1 @ U[a:z, z:]
        keep[:, a:z] = K1
    return keep, W * keep


class _MatrixBlock:
    """A stand-in block whose matrix view is the tensor itself (for :func:`select` on plain matrices)."""

    layout = "linear"
    name = "matrix"
    param = "matrix"


def dense_target(W: torch.Tensor, H: torch.Tensor, cross: torch.Tensor, *, damp: float = 0.01) -> torch.Tensor:
    """The weights whose output on the pruned model's inputs best matches the dense layer's output.

    With ``X`` the layer's input in the model pruned so far, ``X_ref`` its input in the dense model and
    ``C = X^T X_ref`` (``cross``), each row's ``v0 = (H + lam I)^{-1} (C + lam I) w`` minimises
    ``||X v - X_ref w||^2 + lam ||v - w||^2`` (``H = X^T X``, ``lam`` SparseGPT's dampening). Since
    ``X^T (X v0 - X_ref w) = lam (w - v0)``, any ``v`` has ``||X v - X_ref w||^2 + lam ||v - w||^2 =
    ||X v - X v0||^2 + lam ||v - v0||^2 + const``: fitting ``v0`` on ``X`` (:func:`ls_repair`, :func:`obs_prune`)
    solves the dense-target problem. One Cholesky solve, ``O(cols^3 + rows cols^2)``.
    """
    W = W.clone()
    Hd, lam = _damped(H, W, damp)
    B = cross.clone()
    B.diagonal().add_(lam)
    return torch.cholesky_solve(B @ W.T, torch.linalg.cholesky(Hd)).T.contiguous()


def ls_repair(W: torch.Tensor, H: torch.Tensor, keep: torch.Tensor, *, damp: float = 0.01,
              chunk: int = 256) -> torch.Tensor:
    """Exact least-squares repair of the kept weights of every row: ``min_v ||X v - X w||^2 + lam ||v - w||^2``
    over ``v`` supported on the row's kept inputs.

    With ``S`` the kept and ``P`` the pruned inputs of a row, the normal equations give
    ``v_S = w_S + (H_SS + lam I)^{-1} H_SP w_P`` (``H = X^T X``, damped as in :func:`obs_prune`). Rows are
    solved in chunks of equal kept counts (one batched Cholesky per group), ``O(rows s^3)`` for ``s`` kept per
    row.

    Returns the repaired ``(rows, cols)`` float64 matrix, zero off ``keep``.
    """
    W = W.clone()
    H, _ = _damped(H, W, damp)
    out = torch.zeros_like(W)
    counts = keep.sum(1)
    for s in torch.unique(counts).tolist():
        if s == 0:
            continue
        rows = torch.nonzero(counts == s).reshape(-1)
        for c in range(0, rows.numel(), chunk):
            r = rows[c : c + chunk]
            K = keep[r]
            idx = torch.nonzero(K)[:, 1].reshape(len(r), s)  # kept columns of each row, ascending
            Hs = H[idx.unsqueeze(2), idx.unsqueeze(1)]  # (r, s, s)
            rhs = torch.gather(W[r] @ H, 1, idx)  # ((H + lam I) w)_S
            v = torch.cholesky_solve(rhs.unsqueeze(2), torch.linalg.cholesky(Hs)).squeeze(2)
            out[r.unsqueeze(1), idx] = v
    return out


@register
class SparseGPTSparsifier(CalibratedSparsifier):
    """SparseGPT: one-shot pruning with optimal-brain-surgeon weight updates, column block by column block.

    Each block's mask is chosen adaptively (the ``w^2 / [H^{-1}]_jj`` cost on the weights updated so far) and the
    kept weights absorb the error, on the layer-wise squared reconstruction error ``||W X - W' X||^2`` with
    ``H = X^T X`` from the calibration data (see :func:`obs_prune`). The model's kept weights change.

    Parameters
    ----------
    model, data
        As for :class:`CalibratedSparsifier`.
    blocksize : int, default 128
        Columns per lazy-update block.
    damp : float, default 0.01
        Dampening, a fraction of the mean Hessian diagonal.
    nm : (int, int) or str, optional
        N:M sparsity, selected every ``m`` columns as in the paper.

    Notes
    -----
    An Embedding has a diagonal Hessian (one-hot inputs): SparseGPT then reduces to keeping the largest
    ``w^2 * count`` with no update. Grouped convolutions are refused.

    References
    ----------
    .. [1] E. Frantar, D. Alistarh. "SparseGPT: Massive Language Models Can Be Accurately Pruned in One-Shot",
       ICML 2023. doi:10.48550/arXiv.2301.00774
    """

    name = "sparsegpt"
    needs_gram = True
    _parameter_constraints = {
        "blocksize": [Interval(numbers.Integral, 1, None)],
        "damp": [Interval(numbers.Real, 0, None, closed="neither")],
    }

    def __init__(self, sparsity=None, *, blocksize=128, damp=0.01, **kwargs):
        super().__init__(sparsity, **kwargs)
        self.blocksize = blocksize
        self.damp = damp

    def _validate_extra(self):
        super()._validate_extra()
        if self.comparison not in (None, "block"):
            raise ParameterError(f"The 'comparison' parameter of SparseGPTSparsifier must be 'block' (or None): its "
                                 f"mask is chosen per block of {self.blocksize} columns. Got {self.comparison!r}.")

    def compute_mask(self, ctx: BlockContext, k: int) -> torch.Tensor:
        b, st = ctx.block, ctx.stats
        if st.gram is None:  # one-hot inputs: diagonal Hessian, no update
            W = to_matrix(b, ctx.weight.to(torch.float64))
            return select(from_matrix(b, W * W * st.sq_norms.reshape(1, -1)), ctx.available, k, block=b,
                          comparison="block", nm=self._nm())
        _no_groups(b, self.name)
        W = to_matrix(b, ctx.weight.to(torch.float64)).cpu()
        keep, new = obs_prune(W, st.gram, to_matrix(b, ctx.available), k, blocksize=self.blocksize,
                              damp=float(self.damp), nm=self._nm())
        ctx.repaired = from_matrix(b, new)
        return from_matrix(b, keep)


def _no_groups(b, method):
    if b.grid.groups > 1 and b.grid.lead == "dst":
        raise ParameterError(f"Block {b.name!r} is a grouped convolution (groups={b.groups}); {method} needs one "
                             f"Gram matrix per row's inputs. Keep it dense (keep_dense=[{b.param!r}]).")


@register
class FlowSparsifier(CalibratedSparsifier):
    r"""Flow: effective-resistance leverage on the graph weighted by what flows through it, then a repair.

    Each block is the bipartite graph of its matrix view (output rows, input columns) with conductance
    ``a_ij = |W_ij| ||X_j||``: the magnitude of the signal edge ``(j -> i)`` carries on the calibration data
    (``||W_ij X_j||``). An edge's leverage ``a_e R_e`` (``R_e`` its effective resistance in that graph) is its
    importance to the graph's Laplacian, the quantity spectral sparsification samples by (Spielman & Srivastava
    2011); the ``k`` edges of highest leverage are kept per output row (or sampled with probability
    proportional to it, ``sampling=True``). The kept weights are then repaired on the calibration activations:
    the data-aware analogue of the Laplacian reweighting of spectral sparsification.

    Parameters
    ----------
    model, data
        As for :class:`CalibratedSparsifier`.
    criterion : {"leverage", "degree", "flow"}, default "leverage"
        How edges are ranked: ``"leverage"`` ``a_e R_e`` with exact effective resistances; ``"degree"`` its degree
        approximation ``a_e (1/d_i + 1/d_j)`` (RIA's relative importance on the flow graph); ``"flow"`` the
        conductance ``a_e`` alone (Wanda's score). The last two are there to measure what the resistances add.
    repair : {"auto", "ls", "obs", "none"}, default "auto"
        ``"ls"``: exact least squares of every row on its kept inputs (:func:`ls_repair`, ``rows s^3 / 3`` flops
        for ``s`` kept per row); ``"obs"``: SparseGPT's sweep with this mask fixed (:func:`obs_prune`,
        ``cols^3 + rows cols^2``); ``"auto"``: ``"ls"`` where it costs at most :attr:`LS_BUDGET` (8) times the
        sweep, else ``"obs"`` (``"ls"`` on the study's models, ``"obs"`` on a 7B model's 4096-wide layers, where
        exact least squares would cost about 85 times the sweep); ``"none"``: masks only.
    sampling : bool, default False
        Sample the kept edges (Efraimidis-Spirakis keys with weights ``a_e R_e``, from the block's seed stream)
        instead of the deterministic top-k.
    damp : float, default 0.01
        Dampening of the Gram matrix for the repair.
    target : {"dense", "pruned"}, default "dense"
        What the repair reconstructs. ``"pruned"``: the layer's own output on its current input,
        ``min ||X v - X w||`` (SparseGPT's objective). ``"dense"``: the dense model's output,
        ``min ||X v - X_dense w||``, with ``X_dense`` the layer's input in the unpruned model on the same batches,
        so each layer also corrects the error of the layers before it. Costs a second forward per stage, and with
        ``prune(..., permanent=True)`` a copy of the model (the dense reference).
    comparison : {"row", "block"}, default "row"
    nm : (int, int) or str, optional

    Notes
    -----
    On a dense bipartite graph ``R_ij`` is close to ``1/d_i + 1/d_j`` (von Luxburg, Radl & Hein 2014), so the
    leverage of the flow graph is close to RIA's relative importance with ``a = 1``; exact resistances add the
    graph's global structure. For convolutions the input nodes are (channel, tap) columns (the rolled view).
    Cost: one Cholesky of the smaller side per block for ``R``, plus ``O(rows s^3)`` for the ``"ls"`` repair.

    References
    ----------
    .. [1] D. A. Spielman, N. Srivastava. "Graph Sparsification by Effective Resistances", SIAM J. Comput. 40(6),
       2011. doi:10.1137/080734029
    .. [2] U. von Luxburg, A. Radl, M. Hein. "Hitting and commute times in large random neighborhood graphs",
       JMLR 15, 2014.
    .. [3] Y. Zhang et al. "Plug-and-Play: An Efficient Post-training Pruning Method for Large Language Models",
       ICLR 2024.
    """

    name = "flow"
    default_comparison = "row"
    #: ``repair="auto"`` solves exact least squares while it costs at most this many times SparseGPT's sweep.
    LS_BUDGET = 8
    _parameter_constraints = {
        "repair": [Options(REPAIRS)],
        "sampling": [Boolean()],
        "damp": [Interval(numbers.Real, 0, None, closed="neither")],
        "target": [Options(TARGETS)],
        "criterion": [Options(CRITERIA)],
    }

    def __init__(self, sparsity=None, *, criterion="leverage", repair="auto", sampling=False, damp=0.01,
                 target="dense", **kwargs):
        super().__init__(sparsity, **kwargs)
        self.criterion = criterion
        self.repair = repair
        self.sampling = sampling
        self.damp = damp
        self.target = target

    def _reference(self, in_place: bool):
        if self.repair == "none" or self.target != "dense":
            return None
        if in_place:  # the model is pruned as we go: keep a dense copy to aim at
            import copy

            given = getattr(self, "_dense_reference", None)  # prune_checkpoint maps the source read-only
            return given if given is not None else copy.deepcopy(self.model)
        return self.model  # sparsify() prunes a copy; the model itself stays dense

    @property
    def needs_gram(self):
        return self.repair != "none"

    def _repair(self, K: torch.Tensor) -> str:
        if self.repair != "auto":
            return self.repair
        rows, cols = K.shape
        s = float(K.sum(1).max()) if rows else 0.0
        return "ls" if rows * s**3 / 3 <= self.LS_BUDGET * (cols**3 + rows * cols**2) else "obs"

    def score(self, ctx: BlockContext) -> torch.Tensor:
        from ..resistance import bipartite_resistance

        b = ctx.block
        A = to_matrix(b, ctx.weight.abs().to(torch.float64)) * column_scale(b, ctx.stats.norms)
        A = (A * to_matrix(b, ctx.available).to(A.dtype)).cpu()
        if self.criterion == "leverage":
            lev = torch.nan_to_num(A * bipartite_resistance(A), nan=0.0)
        elif self.criterion == "degree":  # R_ij ~ 1/d_i + 1/d_j
            d_out, d_in = A.sum(1, keepdim=True), A.sum(0, keepdim=True)
            lev = A * (torch.where(d_out > 0, 1 / d_out.clamp_min(1e-300), 0.0)
                       + torch.where(d_in > 0, 1 / d_in.clamp_min(1e-300), 0.0))
        else:  # "flow": the conductance itself, |W_ij| ||X_j|| (Wanda's score)
            lev = A
        if self.sampling:  # keys u^(1/p): log(u) / p, larger is kept first; p = 0 never before p > 0
            u = torch.from_numpy(ctx.rng.random(lev.shape))
            lev = torch.where(lev > 0, torch.log(u) / lev.clamp_min(1e-300), -1e300 + torch.log(u))
        return from_matrix(b, lev)

    def compute_mask(self, ctx: BlockContext, k: int) -> torch.Tensor:
        b, st = ctx.block, ctx.stats
        keep = super().compute_mask(ctx, k)
        if self.repair == "none" or st.gram is None:
            return keep
        _no_groups(b, self.name)
        W = to_matrix(b, ctx.weight.to(torch.float64)).cpu()
        K = to_matrix(b, keep)
        if st.cross is not None:  # aim at the dense model's output: the same problem for v0 (dense_target)
            W = dense_target(W, st.gram, st.cross, damp=float(self.damp))
        if self._repair(K) == "ls":
            new = ls_repair(W, st.gram, K, damp=float(self.damp))
        else:
            _, new = obs_prune(W, st.gram, K, int(K.sum()), damp=float(self.damp), fixed=K)
        ctx.repaired = from_matrix(b, new)
        return keep
