"""Calibration data: what flows into each weight block, gathered sequentially the way the LLM pruning papers do.

A data-aware sparsifier (Wanda, SparseGPT, RIA, :class:`~graphprune.sparsify.calibrated.FlowSparsifier`) needs,
for every weight block, statistics of the block's *input*: the squared norm of every input column
``||X_j||^2`` and, for the methods that repair weights, the Gram matrix ``X^T X`` (the layer-wise Hessian of
the squared reconstruction error). ``X`` stacks one row per sample position (token, pixel, time step): for a
Linear layer the rows of its input flattened to ``(-1, in_features)``; for a convolution the unfolded patches
(im2col), so column ``j`` is one (input channel, tap) pair in the order of ``weight.reshape(out, -1)``; for an
Embedding the one-hot rows of the token ids (``||X_j||^2`` is token ``j``'s count, the Gram matrix is diagonal).

**Sequential gathering.** Units are grouped into *stages* by their input partition (q, k and v read the same
tensor; so do an MLP's gate and up projections); stages run in the graph's topological order. For each stage the
calibration batches go through the model with a forward pre-hook on every module of the stage, and the forward
stops as soon as all of them have seen their input (nothing downstream runs). The stage's masks are then written
into the model before the next stage gathers, so the inputs of a layer come from the layers before it already
pruned (and repaired), as in SparseGPT [1]_ and Wanda [2]_. Memory: one stage's statistics (``in^2`` floats
per unit with a Gram matrix, ``in`` without); no activation of the whole model is ever stored.

**Layer stacks.** When the model runs an ``nn.ModuleList`` of layers in order (a transformer's decoder layers),
checked on the first batch, a stage inside layer ``l`` runs layer ``l`` alone from its cached inputs, and the cache
moves to layer ``l + 1`` through the layer's pruned weights: the papers' layer-by-layer loop, with the inputs of one
layer for every calibration batch in memory (``batches x tokens x hidden``). Other models run the whole forward up
to each stage.

This module knows the model and the graph's blocks; it imports nothing above the graph.

References
----------
.. [1] E. Frantar, D. Alistarh. "SparseGPT: Massive Language Models Can Be Accurately Pruned in One-Shot",
   ICML 2023. doi:10.48550/arXiv.2301.00774
.. [2] M. Sun, Z. Liu, A. Bair, J. Z. Kolter. "A Simple and Effective Pruning Approach for Large Language Models"
   (Wanda), ICLR 2024. doi:10.48550/arXiv.2306.11695
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ._torchprune import canonical, original
from .errors import GraphPruneError, ParameterError

__all__ = ["InputStats", "check_batches", "stages", "gather", "to_matrix", "from_matrix", "column_scale",
           "module_of", "StageRunner"]


@dataclass
class InputStats:
    """Statistics of one unit's input over the calibration data.

    Attributes
    ----------
    n : int
        Number of sample rows (tokens, patch positions) seen.
    sq_norms : torch.Tensor
        float64, ``(in_cols,)``: ``||X_j||^2`` for every input column of the unit's matrix view
        (:func:`to_matrix`).
    gram : torch.Tensor or None
        float64, ``(in_cols, in_cols)``: ``X^T X`` (only when asked for; None for an Embedding, whose Gram
        matrix is ``diag(sq_norms)``).
    cross : torch.Tensor or None
        float64, ``(in_cols, in_cols)``: ``X^T X_ref``, with ``X_ref`` the same unit's input in a reference model
        (the dense model) on the same batches (only when a reference is given).
    """

    n: int
    sq_norms: torch.Tensor
    gram: torch.Tensor | None = None
    cross: torch.Tensor | None = None

    @property
    def norms(self) -> torch.Tensor:
        """``||X_j||`` per input column."""
        return self.sq_norms.sqrt()


# -- batches ---------------------------------------------------------------------------------------------------------
def _input_of(batch):
    """The model input of one batch: a Tensor, a dict of tensors, or the first element of a (input, label) pair."""
    if isinstance(batch, (tuple, list)) and batch:
        return batch[0]
    return batch


def check_batches(data, *, owner: str, param: str = "data") -> list:
    """The calibration batches of ``data`` as a list of model inputs (each a Tensor or a dict of tensors).

    ``data`` is a Tensor (one batch), a dict of tensors (one batch of keyword inputs, as Hugging Face models take),
    or an iterable of such batches (a list, a ``torch.utils.data.DataLoader``); a batch that is a tuple or list
    is ``(input, *ignored)``, as supervised loaders yield ``(input, label)``. Empty data, a batch that is not a
    tensor or a dict of tensors, an empty tensor and a floating tensor with NaN or inf are refused with a
    :class:`~graphprune.errors.ParameterError` naming the batch.
    """
    where = f"The '{param}' parameter of {owner}"
    if data is None:
        raise ParameterError(f"{where} is needed: {owner} is data-aware. Pass calibration batches (a tensor of "
                             "model inputs, a dict of tensors for a Hugging Face model, or a DataLoader).")
    if isinstance(data, (torch.Tensor, dict)):
        batches = [data]
    elif isinstance(data, (str, bytes)) or not hasattr(data, "__iter__"):
        raise ParameterError(f"{where} must be a tensor, a dict of tensors or an iterable of batches (a list, a "
                             f"DataLoader). Got {type(data).__name__} instead.")
    else:
        batches = [_input_of(b) for b in data]
    if not batches:
        raise ParameterError(f"{where} yielded no batch: statistics of an empty set are undefined. Pass at least "
                             "one batch of model inputs.")
    for i, x in enumerate(batches):
        items = x.items() if isinstance(x, dict) else [(None, x)]
        if isinstance(x, dict) and not x:
            raise ParameterError(f"{where}: batch {i} is an empty dict. Pass the model's keyword inputs.")
        for key, t in items:
            what = f"batch {i}" + (f", key {key!r}," if key is not None else "")
            if not isinstance(t, torch.Tensor):
                if key is not None and (t is None or isinstance(t, (bool, int, float))):
                    continue  # flags such as use_cache=False
                raise ParameterError(f"{where}: {what} is a {type(t).__name__}, not a tensor. Batches are "
                                     "tensors, dicts of tensors or (input, label) pairs.")
            if t.numel() == 0:
                raise ParameterError(f"{where}: {what} is an empty tensor of shape {tuple(t.shape)}.")
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise ParameterError(f"{where}: {what} holds NaN or inf values; clean the calibration data.")
    return batches


def _signature(x):
    """Shapes and dtypes of one batch (a dict's keys included): batches with equal signatures fit alike."""
    if isinstance(x, dict):
        return tuple(sorted((k, tuple(t.shape), t.dtype) if isinstance(t, torch.Tensor) else (k, repr(t))
                            for k, t in x.items()))
    return tuple(x.shape), x.dtype


def _call(model, x):
    return model(**x) if isinstance(x, dict) else model(x)


# -- blocks as matrices ----------------------------------------------------------------------------------------------
def module_of(model: nn.Module, block) -> nn.Module:
    """The module that owns ``block``'s parameter in ``model`` (looked up by the parameter's qualified name)."""
    path = block.param.rpartition(".")[0]
    try:
        return model.get_submodule(path) if path else model
    except AttributeError as exc:
        raise ParameterError(f"The model has no module {path!r} for block {block.name!r}: pass the model the graph "
                             "was exported from.") from exc


def _refuse(block, why):
    raise ParameterError(f"Block {block.name!r} ({block.layout}, shape {tuple(block.weight.shape)}) cannot be "
                         f"pruned with calibration data: {why}. Keep it dense (keep_dense=[{block.param!r}]) or use "
                         "a weight-only method for it.")


def to_matrix(block, t: torch.Tensor) -> torch.Tensor:
    """``t`` (shaped like ``block.weight``) as the ``(out, in_cols)`` matrix that multiplies the unit's input
    columns (:class:`InputStats`): linear as is; conv ``(out, in * prod(k))``; embedding and Conv1D-style
    ``(in, out)`` transposed. Grouped convolutions give ``(out, in/groups * prod(k))`` (each row sees its group)."""
    m = block.grid.dst_matrix(t)
    if m is None:
        _refuse(block, f"layout {block.layout!r} is not supported")
    return m


def from_matrix(block, m: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`to_matrix`: a matrix-view tensor back in the block's weight shape."""
    return block.grid.from_dst_matrix(m)


def column_scale(block, v: torch.Tensor) -> torch.Tensor:
    """A per-input-column vector ``v`` (``(in_cols,)`` of the full input) spread over the matrix view
    ``(out, in_cols / groups)``: row ``o`` of a grouped convolution sees its own group's columns."""
    g = block.grid.groups if block.grid.lead == "dst" else 1  # (out, in/groups) storage; see to_matrix
    if g == 1:
        return v.reshape(1, -1)
    out = block.weight.shape[0]
    per = v.numel() // g
    rows = torch.arange(out) // (out // g)
    return v.reshape(g, per)[rows]


# -- stages ----------------------------------------------------------------------------------------------------------
def stages(graph, units) -> list[list]:
    """Units grouped by input partition, in the graph's topological order of those partitions."""
    order = {p.name: i for i, p in enumerate(graph.partitions)}
    groups: dict[str, list] = {}
    for b in units:
        groups.setdefault(b.src, []).append(b)
    return [groups[s] for s in sorted(groups, key=lambda s: order.get(s, math.inf))]


class _Stop(BaseException):
    """Raised by the last hook of a stage: nothing downstream needs to run."""


def _columns(module, block, x: torch.Tensor) -> torch.Tensor:
    """The input columns ``X`` (rows = samples) of one call of ``module`` with positional input ``x``."""
    if block.layout == "embedding" and isinstance(module, nn.Embedding):
        return x  # token ids: counted, not densified
    if block.layout in ("linear", "embedding"):
        return x.reshape(-1, x.shape[-1])
    if block.layout == "conv" and isinstance(module, (nn.Conv1d, nn.Conv2d)):
        if module.padding_mode != "zeros":
            _refuse(block, f"padding_mode={module.padding_mode!r} (only zero padding is unfolded)")
        k, s, d = module.kernel_size, module.stride, module.dilation
        p = module.padding
        if isinstance(p, str):
            p = tuple(0 for _ in k) if p == "valid" else tuple((di * (ki - 1)) // 2 for ki, di in zip(k, d))
            if any((di * (ki - 1)) % 2 for ki, di in zip(k, d)):
                _refuse(block, "padding='same' with an even receptive field (asymmetric padding)")
        if isinstance(module, nn.Conv1d):
            x, k, s, d, p = x.unsqueeze(-2), (1, *k), (1, *s), (1, *d), (0, *p)
        if x.dim() == 3:
            x = x.unsqueeze(0)
        cols = torch.nn.functional.unfold(x, k, dilation=d, padding=p, stride=s)  # (N, C*K, L)
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])
    _refuse(block, f"its module {type(module).__name__} has no known input unfolding")


def _shared_key(a):
    """Units whose statistics are equal: Linear-like blocks fed the very same input tensors (q, k and v)."""
    if a.block.layout != "linear" or a.block.param_slice is not None or not a.pending:
        return None
    def ident(t):  # the hooks hold detached views: compare storage, not objects (all are alive here)
        return t.data_ptr(), tuple(t.shape), t.stride(), t.dtype, t.device

    return tuple(map(ident, a.pending)) + ("ref",) + tuple(map(ident, a.pending_ref)) + (a.want_gram,)


def _owning_mha(model: nn.Module, block):
    """The ``nn.MultiheadAttention`` whose ``out_proj`` holds ``block``'s parameter, or None.

    ``MultiheadAttention.forward`` uses ``out_proj.weight`` in a functional call, so the ``out_proj`` module itself
    never runs and a hook on it never fires; its input is recovered from the attention call instead
    (:func:`_mha_context`)."""
    path = block.param.rpartition(".")[0]
    parent, _, leaf = path.rpartition(".")
    if leaf != "out_proj":
        return None
    m = model.get_submodule(parent) if parent else model
    return m if isinstance(m, nn.MultiheadAttention) else None


def _mha_context(mha: nn.MultiheadAttention, args, kwargs) -> torch.Tensor:
    """The input of ``mha.out_proj`` in one call ``mha(*args, **kwargs)``: the heads' outputs concatenated.

    The same call is run with the output projection replaced by the identity (``torch.func.functional_call``: the
    module's parameters are not touched), which returns exactly ``concat_h(softmax(q_h k_h^T / sqrt(d)) v_h)``
    whatever the masks, biases and batch layout of the call."""
    w = mha.out_proj.weight
    swap = {"out_proj.weight": torch.eye(w.shape[1], dtype=w.dtype, device=w.device)}
    if mha.out_proj.bias is not None:
        swap["out_proj.bias"] = torch.zeros_like(mha.out_proj.bias)
    kwargs = dict(kwargs, need_weights=False)
    return torch.func.functional_call(mha, swap, tuple(args), kwargs)[0]


def _mha_input(block, args, kwargs):
    """The q, k or v input of a MultiheadAttention call for a sliced in_proj block."""
    names = ("query", "key", "value")
    e = block.param_slice[1] - block.param_slice[0]
    which = block.param_slice[0] // e
    if len(args) > which:
        return args[which]
    return kwargs[names[which]]


class _Accumulator:
    def __init__(self, block, module, gram: bool):
        self.block, self.module, self.want_gram = block, module, gram
        self.n = 0
        self.sq = None
        self.gram = None
        self.cross = None
        self.pending, self.pending_ref = [], []

    def begin_batch(self):
        """Start recording this batch's contributions (so another unit reading the same tensors can copy them)."""
        self.batch = []

    def copy_batch(self, other: _Accumulator):
        """Add the contributions ``other`` recorded for this batch (the same input tensors)."""
        self.batch = None
        for n, sq, G, C in other.batch:
            self._accumulate(n, sq, G, C)

    def _accumulate(self, n, sq, G, C):
        self.n += n
        self.sq = sq.clone() if self.sq is None else self.sq + sq
        if G is not None:
            self.gram = G.clone() if self.gram is None else self.gram.add_(G)
        if C is not None:
            self.cross = C.clone() if self.cross is None else self.cross.add_(C)

    def add(self, x: torch.Tensor, ref: torch.Tensor | None = None):
        b = self.block
        x = x.detach()
        if b.layout == "embedding" and isinstance(self.module, nn.Embedding):
            counts = torch.bincount(x.reshape(-1).cpu(), minlength=self.module.num_embeddings).to(torch.float64)
            self.n += int(x.numel())
            self.sq = counts if self.sq is None else self.sq + counts
            return  # one-hot rows: the Gram matrix is diag(counts), never formed (gram stays None)
        X = _columns(self.module, b, x).to(torch.float64)
        sq = (X * X).sum(0).cpu()
        G = (X.T @ X).cpu() if self.want_gram else None
        C = (X.T @ _columns(self.module, b, ref.detach()).to(torch.float64)).cpu() if ref is not None else None
        if getattr(self, "batch", None) is not None:
            self.batch.append((X.shape[0], sq, G, C))
        self._accumulate(X.shape[0], sq, G, C)

    def result(self) -> InputStats:
        if self.sq is None:
            raise GraphPruneError(f"Module of block {self.block.name!r} never ran on the calibration data: the "
                                  "model's forward does not reach it with these inputs.")
        return InputStats(self.n, self.sq, self.gram, self.cross)


def _hidden(args, kwargs):
    """The hidden-state input of a layer call: its first positional argument, or ``hidden_states=``."""
    return args[0] if args else kwargs.get("hidden_states")


def _with_hidden(args, kwargs, h):
    if args:
        return (h, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": h}


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and (
            a is b or (a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)))
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a is b or (type(a) is type(b) and isinstance(a, (int, float, bool, str, type(None))) and a == b)


class _LayerCache:
    """The inputs of one layer of a stack (an ``nn.ModuleList`` run in order, each layer's output the next one's
    hidden state, the other arguments shared), per calibration batch: a stage inside layer ``l`` then runs only
    layer ``l`` instead of the whole model up to it, as the LLM pruning papers do. Found and checked on the first
    batch by :meth:`StageRunner.check`; when the model does not have that shape, nothing is cached."""

    def __init__(self, model, prefix: str, layers):
        self.model, self.prefix, self.layers = model, prefix, layers
        self.index = -1
        self.inputs: list = []

    def capture(self, runner) -> None:
        """The inputs of layer 0 for every batch."""
        store = []

        def hook(mod, args, kwargs):
            store.append((args, kwargs))
            raise _Stop

        h = self.layers[0].register_forward_pre_hook(hook, with_kwargs=True)
        try:
            for i, x in enumerate(runner.batches):
                try:
                    runner._run(i, x, self.model)
                except _Stop:
                    pass
        finally:
            h.remove()
        self.inputs, self.index = store, 0

    def advance(self, l: int, runner) -> None:
        """Run the cached layers (with their current, pruned weights) until the inputs of layer ``l`` are held."""
        if self.index < 0:
            self.capture(runner)
        while self.index < l:
            layer, out = self.layers[self.index], []
            for args, kwargs in self.inputs:
                y = layer(*args, **kwargs)
                out.append(_with_hidden(args, kwargs, y[0] if isinstance(y, (tuple, list)) else y))
            self.inputs, self.index = out, self.index + 1

    @staticmethod
    def find(model, units, batch, runner):
        """The cache for ``model``'s layer stack holding most units, if it passes the check on ``batch``."""
        best, count = None, 0
        for name, mod in model.named_modules():
            if isinstance(mod, nn.ModuleList) and len(mod) >= 2:
                c = sum(1 for b in units for i in range(len(mod)) if b.param.startswith(f"{name}.{i}."))
                if c > count:
                    best, count = (name, mod), c
        if best is None:
            runner._run(0, batch, model)  # the caller counts on this forward to check the batch
            return None
        name, layers = best
        calls = []

        def hook(mod, args, kwargs, out):
            calls.append((mod, args, kwargs, out))

        hs = [m.register_forward_hook(hook, with_kwargs=True) for m in layers]
        try:
            runner._run(0, batch, model)
        finally:
            for h in hs:
                h.remove()
        if [c[0] for c in calls] != list(layers):
            return None  # not each layer exactly once, in order
        for (_, a0, k0, y0), (_, a1, k1, _) in zip(calls, calls[1:]):
            out = y0[0] if isinstance(y0, (tuple, list)) else y0
            if _hidden(a1, k1) is not out and not _same(_hidden(a1, k1), out):
                return None  # something runs between two layers
            if not _same(a0[1:], a1[1:]) or set(k0) != set(k1) or not all(
                    _same(k0[k], k1[k]) for k in k0 if k != "hidden_states"):
                return None  # the other arguments differ from layer to layer
        return _LayerCache(model, name, layers)

    def layer_of(self, stage):
        """The index of the layer holding every unit of ``stage``, or None."""
        idx = set()
        for b in stage:
            head = b.param[len(self.prefix) + 1 :] if b.param.startswith(self.prefix + ".") else ""
            part = head.split(".", 1)[0]
            if not part.isdigit():
                return None
            idx.add(int(part))
        return idx.pop() if len(idx) == 1 else None


class StageRunner:
    """Runs the calibration batches through ``model`` once per stage and returns each unit's :class:`InputStats`.

    Parameters
    ----------
    model : torch.nn.Module
        The model whose modules own the units' parameters (run in eval mode under ``torch.no_grad``; its training
        flag is restored).
    batches : list
        From :func:`check_batches`.
    owner : str
        The caller's name, for error messages.
    reference : torch.nn.Module, optional
        A second model of the same architecture (the dense model) run on the same batches: each unit's
        :attr:`InputStats.cross` is then ``X^T X_ref``.
    """

    def __init__(self, model: nn.Module, batches: list, *, owner: str, reference: nn.Module | None = None,
                 cache_layers: bool = True):
        self.model, self.batches, self.owner, self.reference = model, batches, owner, reference
        self.cache_layers = cache_layers
        self.caches = {}

    def _run(self, i, x, model=None):
        m = self.model if model is None else model
        _guarded(self.owner, i, "the forward pass", lambda: _call(m, x))

    def check(self, units=()) -> None:
        """One whole forward pass of every distinct batch shape: wrong keys, shapes or dtypes fail here. With
        ``units``, the first of them also looks for a layer stack to cache (:class:`_LayerCache`); the reference
        model, of the same architecture, caches the same stack."""
        shapes = set()
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                if self.cache_layers and units:
                    cache = _LayerCache.find(self.model, units, self.batches[0], self)  # runs batch 0
                    shapes.add(_signature(self.batches[0]))
                    self.caches[id(self.model)] = cache
                    if cache is not None and self.reference is not None:
                        self.caches[id(self.reference)] = _LayerCache(
                            self.reference, cache.prefix, self.reference.get_submodule(cache.prefix))
                for i, x in enumerate(self.batches):
                    sig = _signature(x)
                    if sig not in shapes:
                        shapes.add(sig)
                        self._run(i, x)
        finally:
            self.model.train(was_training)

    def _hooked(self, model, accs, ref: bool):
        """Forward pre-hooks on ``model``'s modules of ``accs`` that store each call's input; the last module of
        the stage to run stops the forward."""
        by_module: dict[int, list] = {}
        mods = {}
        context = set()  # accumulators of an out_proj, fed from their attention call
        for a in accs.values():
            m = _owning_mha(model, a.block)
            if m is not None:
                context.add(id(a))
            else:
                m = module_of(model, a.block)
            by_module.setdefault(id(m), []).append(a)
            mods[id(m)] = m
        seen: set = set()
        inside = []  # re-entry guard: _mha_context calls the attention module again

        def hook(mod, args, kwargs):
            if inside:
                return
            for a in by_module[id(mod)]:
                if id(a) in context:
                    inside.append(True)
                    try:
                        x = _mha_context(mod, args, kwargs)
                    finally:
                        inside.pop()
                elif a.block.param_slice is not None:
                    x = _mha_input(a.block, args, kwargs)
                else:
                    x = args[0] if args else next(iter(kwargs.values()))
                (a.pending_ref if ref else a.pending).append(x.detach())
            seen.add(id(mod))
            if len(seen) == len(mods):
                raise _Stop

        return [m.register_forward_pre_hook(hook, with_kwargs=True) for m in mods.values()], seen, by_module

    def _pass(self, i, x, seen, by_module, run=None):
        seen.clear()
        try:
            if run is None:
                self._run(i, x)
            else:
                run()
        except _Stop:
            return
        missing = [a.block.name for mid, lst in by_module.items() if mid not in seen for a in lst]
        raise GraphPruneError(f"The model's forward on calibration batch {i} never reached every module of the "
                              f"stage ({', '.join(missing)}); they cannot be calibrated.")

    def gather(self, stage, *, gram: bool) -> dict:
        accs = {}
        for b in stage:
            m = module_of(self.model, b)
            if b.param_slice is not None and not isinstance(m, nn.MultiheadAttention):
                _refuse(b, "a sliced parameter outside nn.MultiheadAttention")
            accs[b.name] = _Accumulator(b, m, gram)
        models = [(self.model, False)] + ([(self.reference, True)] if self.reference is not None else [])
        hooked = [(model, ref, *self._hooked(model, accs, ref)) for model, ref in models]
        flags = [model.training for model, _ in models]
        for model, _ in models:
            model.eval()
        try:
            with torch.no_grad():
                layer = {}
                for model, _ in models:  # a stage inside a cached layer runs that layer alone
                    c = self.caches.get(id(model))
                    lay = c.layer_of(stage) if c is not None else None
                    if lay is not None and lay >= c.index:
                        c.advance(lay, self)
                        layer[id(model)] = (c, lay)
                for i, x in enumerate(self.batches):
                    for model, _ref, _h, seen, by_module in hooked:
                        run = None
                        if id(model) in layer:
                            c, lay = layer[id(model)]
                            args, kwargs = c.inputs[i]
                            run = _bind(self, i, c.layers[lay], args, kwargs)
                        saved, self.model = self.model, model
                        try:
                            self._pass(i, x, seen, by_module, run)
                        finally:
                            self.model = saved
                    shared = {}  # q, k and v (gate and up) read the same tensor: its statistics once
                    for a in accs.values():
                        key = _shared_key(a)
                        if key is not None and key in shared:
                            a.copy_batch(shared[key])
                        else:
                            a.begin_batch()
                            refs = a.pending_ref if self.reference is not None else [None] * len(a.pending)
                            for xa, xr in zip(a.pending, refs):
                                a.add(xa, xr)
                            if key is not None:
                                shared[key] = a
                    for a in accs.values():
                        a.pending, a.pending_ref, a.batch = [], [], None
        finally:
            for _, _, handles, _, _ in hooked:
                for h in handles:
                    h.remove()
            for (model, _), flag in zip(models, flags):
                model.train(flag)
        return {name: a.result() for name, a in accs.items()}


def _guarded(owner, i, what, fn):
    """Run ``fn``; a failure of the user's model on the user's data becomes a ParameterError naming the batch."""
    try:
        fn()
    except (_Stop, GraphPruneError):
        raise
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ParameterError(f"The 'data' parameter of {owner} does not fit the model: {what} on calibration batch "
                             f"{i} failed with {type(exc).__name__}: {first}") from exc


def _bind(runner, i, layer, args, kwargs):
    return lambda: _guarded(runner.owner, i, "a layer's forward", lambda: layer(*args, **kwargs))


def gather(model, stage, batches, *, gram: bool = False, owner: str = "gather") -> dict:
    """Statistics of every unit of ``stage`` on ``batches`` (one pass; see :class:`StageRunner`)."""
    return StageRunner(model, batches, owner=owner).gather(stage, gram=gram)


# -- the model behind a graph ----------------------------------------------------------------------------------------
def param_of(model: nn.Module, name: str) -> torch.Tensor:
    """Parameter ``name`` of ``model``; its ``_orig`` tensor when ``torch.nn.utils.prune`` reparametrised it."""
    path, _, attr = name.rpartition(".")
    mod = model.get_submodule(path) if path else model
    return original(mod, attr)


def check_model(model: nn.Module, graph, *, owner: str) -> None:
    """``model`` must be the one ``graph`` was exported from: every graph parameter, same shape."""
    have = {}
    for mod_name, mod in model.named_modules():
        for attr, p in mod._parameters.items():
            if p is not None:
                key = (mod_name + "." if mod_name else "") + canonical(attr)
                have[key] = tuple(p.shape)
    missing = [n for n in graph.params if have.get(n) != tuple(graph.param_shapes[n])]
    if missing:
        raise ParameterError(
            f"The 'model' parameter of {owner} must be the model the graph was exported from: it has no "
            f"parameter {missing[0]!r} of shape {tuple(graph.param_shapes[missing[0]])}"
            f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}. Pass model=<that model>.")


def masked_copy(model: nn.Module, graph):
    """``(copy, masks)``: a deep copy of ``model`` with the graph's masks multiplied into its weights (the model is
    untouched)."""
    import copy

    m = copy.deepcopy(model)
    masks = graph.masks
    with torch.no_grad():
        for name in graph.params:
            p = param_of(m, name)
            p.mul_(masks[name].to(p.device, p.dtype))
    return m, masks
