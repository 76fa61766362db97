"""Incremental construction of a MultipartiteGraph while walking a traced dataflow graph.

A traced tensor is described by a :class:`Val`: the partition its channel dimension indexes, which dimension that
is, and its full shape (batch included). Shape rules decide, from input and output shapes alone, whether an
operation keeps the channel dimension (pass-through), flattens it with trailing dimensions (a feature partition
with identity edges), or does something the exporter cannot follow (a clear error).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .._torchprune import canonical, pruned
from ..errors import UnsupportedOperationError
from ..graph import Block, MultipartiteGraph, Partition


@dataclass(frozen=True, eq=False)
class Val:
    """A traced tensor: ``part`` is None for a raw model input not yet consumed by a layer.

    ``grid`` is set while a view has split the channel dimension over several dims (a channel shuffle, attention
    heads): an int array of the original channel index at each position, whose axis ``i`` is tensor dim
    ``gdims[i]`` (the dims need not be adjacent after a permute).
    """

    part: str | None
    cdim: int
    shape: tuple
    raw: str | None = None  # placeholder name of a raw input
    grid: object = None
    gdims: tuple | None = None

    @property
    def channels(self) -> int:
        return int(self.shape[self.cdim])


@dataclass(frozen=True, eq=False)
class Scores:
    """Attention scores ``q @ k^T`` (no channel dim of their own): remembers the query and key tensors.

    ``q_dim`` and ``k_dim`` are the contracted (head-size) dims of ``q`` and ``k``; ``bias`` holds traced tensors
    added to the scores (a learned relative-position bias, one channel per head).
    """

    q: Val
    k: Val
    shape: tuple
    q_dim: int = -1
    k_dim: int = -2
    bias: tuple = ()


@dataclass(frozen=True, eq=False)
class Stat:
    """A statistic reduced over the channel dimension (RMSNorm's mean of squares, a vector norm): it rescales
    its tensor but carries no node of its own, so elementwise ops with it pass the tensor's nodes through."""

    shape: tuple


@dataclass(frozen=True)
class ParamRef:
    """A parameter reached through ``get_attr`` (used by functional ``F.linear`` / ``F.conv*``)."""

    name: str
    tensor: torch.Tensor


class Builder:
    """Collects partitions, blocks and initial masks; resolves canonical parameter names."""

    def __init__(self, model: torch.nn.Module, n_inputs: int = 1):
        self.n_inputs = n_inputs
        self.parts: dict[str, dict] = {}
        self.blocks: list[Block] = []
        self.masks: dict[str, torch.Tensor] = {}
        self.param_shapes: dict[str, tuple] = {}
        self._inputs: dict[tuple, str] = {}
        self.buffer_names: set = set()  # raw values that come from buffers, not from the inputs
        self.uses: list = []  # ChannelUse records (graphprune.export.uses), read by graphprune.structured
        self._canonical = {}
        self._tensors: dict[str, torch.Tensor] = {}
        self._by_name: dict[str, torch.Tensor] = {}
        for name, p in model.named_parameters():
            key = canonical(name)
            self._canonical.setdefault(id(p), key)
            self._by_name.setdefault(key, p)

    # -- names -------------------------------------------------------------------------------------------------
    def unique(self, name: str, taken) -> str:
        if name not in taken:
            return name
        i = 1
        while f"{name}_{i}" in taken:
            i += 1
        return f"{name}_{i}"

    def new_partition(self, name: str, size: int, *, kind: str = "neuron", shape=None, role: str = "hidden") -> str:
        name = self.unique(name or "node", self.parts)
        self.parts[name] = dict(size=int(size), kind=kind, shape=tuple(shape or (size,)), role=role)
        return name

    # -- parameters --------------------------------------------------------------------------------------------
    def param(self, module: torch.nn.Module, attr: str, path: str):
        """Return ``(canonical name, tensor)`` of ``module.<attr>``; record a torch.nn.utils.prune mask."""
        reparam = pruned(module, attr)
        if reparam is not None:
            tensor, mask = reparam
        else:
            tensor, mask = getattr(module, attr), None
        name = self._canonical.get(id(tensor), f"{path}.{attr}" if path else attr)
        self.param_shapes[name] = tuple(tensor.shape)
        self._tensors[name] = tensor.detach()
        if mask is not None:
            m = mask.detach().to("cpu") != 0
            self.masks[name] = self.masks[name] & m if name in self.masks else m
        return name, tensor.detach()

    def param_from_ref(self, ref: ParamRef):
        name = self._canonical.get(id(ref.tensor), ref.name)
        self.param_shapes[name] = tuple(ref.tensor.shape)
        self._tensors[name] = ref.tensor.detach()
        return name, ref.tensor.detach()

    # -- values ------------------------------------------------------------------------------------------------
    def materialize(self, v: Val, cdim: int, *, kind: str = "neuron", size: int | None = None) -> Val:
        """Give a raw input value an input partition whose nodes index dimension ``cdim``."""
        if v.part is not None:
            return v
        cdim = cdim % len(v.shape)
        n = int(size if size is not None else v.shape[cdim])
        key = (v.raw, n, kind)
        if key not in self._inputs:
            base = v.raw if v.raw in self.buffer_names else (
                "input" if self.n_inputs == 1 or v.raw is None else v.raw)
            shape = (n,) if size is not None else tuple(v.shape[1:])
            self._inputs[key] = self.new_partition(base, n, kind=kind, shape=shape, role="input")
        return Val(self._inputs[key], cdim, v.shape)

    def weight_block(self, name, src: str, dst: str, param: str, weight: torch.Tensor, layout: str, *,
                     groups: int = 1, param_slice=None, edge_kind: str = "feature") -> Block:
        full = self._tensors.get(param)
        if full is not None:
            start = param_slice[0] if param_slice is not None else 0
            rows = (param_slice[1] - param_slice[0],) if param_slice is not None else tuple(full.shape[:1])
            same = (tuple(weight.shape) == rows + tuple(full.shape[1:]) and weight.stride() == full.stride()
                    and (full.is_meta  # a shape-only export (prune_checkpoint): no storage to compare
                         or weight.data_ptr() == full.data_ptr() + start * full.stride(0) * full.element_size())
                    if full.dim() else tuple(weight.shape) == tuple(full.shape))
            if not same:
                raise UnsupportedOperationError(
                    f"Block '{name}' for parameter '{param}' is not the parameter itself (shape "
                    f"{tuple(weight.shape)}, strides {weight.stride()}; parameter {tuple(full.shape)}, "
                    f"{full.stride()}): an adapter must pass the parameter (or rows of it) unchanged and pick the "
                    "layout ('linear' for (out, in), 'embedding' for (in, out)) instead of transposing it."
                )
        b = Block(
            name=self.unique(name, {x.name for x in self.blocks}), src=src, dst=dst, kind="weight", param=param,
            weight=weight, param_slice=param_slice, layout=layout, groups=int(groups), edge_kind=edge_kind,
        )
        b.bias = self._bias_of(param, b) if param_slice is None else None
        self.blocks.append(b)
        return b

    def _bias_of(self, param: str, b: Block):
        """The ``bias`` beside parameter ``param`` (``x.weight`` -> ``x.bias``) when it holds one value per
        destination node of block ``b``, detached; else None."""
        if not param.endswith("weight"):
            return None
        bias = self._by_name.get(param[: -len("weight")] + "bias")
        if bias is None or bias.dim() != 1 or bias.is_meta or int(bias.numel()) != b.n_dst:
            return None
        return bias.detach()

    def identity_block(self, name, src: str, dst: str, s_idx=None, d_idx=None, *, edge_kind: str = "feature",
                       product=None) -> Block:
        """An identity block from explicit ``(s_idx, d_idx)`` or, for a union of complete bipartite groups, from
        ``product=(src_groups, dst_groups)`` (see :attr:`Block.product`; no per-edge index is stored)."""
        if product is not None:
            product = tuple(np.ascontiguousarray(np.asarray(g, dtype=np.int64)) for g in product)
            s_idx = d_idx = None
        else:
            s_idx, d_idx = np.asarray(s_idx, dtype=np.int64), np.asarray(d_idx, dtype=np.int64)
        b = Block(
            name=self.unique(name, {x.name for x in self.blocks}), src=src, dst=dst, kind="identity",
            src_index=s_idx, dst_index=d_idx, product=product,
            edge_kind=edge_kind, meta={"n_src": self.parts[src]["size"], "n_dst": self.parts[dst]["size"]},
        )
        self.blocks.append(b)
        return b

    def merge(self, name: str, vals: list[Val], shape: tuple, *, kind: str = "merge") -> Val:
        """Residual add (or any elementwise op of several tensors): identity edges i -> i from each operand."""
        _plain(name, vals)
        parts = [v for v in vals if v.part is not None]
        ref = parts[0] if parts else vals[0]
        cdim = _align(ref.cdim, ref.shape, shape)
        vals = [self.materialize(v, _align(cdim, shape, v.shape)) if v.part is None else v for v in vals]
        distinct = list(dict.fromkeys(v.part for v in vals))
        if len(distinct) == 1:
            return Val(distinct[0], cdim, tuple(shape))
        C = int(shape[cdim])
        out = self.new_partition(name, C, kind=kind)
        for p in distinct:
            n = self.parts[p]["size"]
            if n == C:
                idx = np.arange(C)
                self.identity_block(f"{name}<-{p}", p, out, idx, idx)
            elif n == 1:  # broadcast of a single channel to all
                self.identity_block(f"{name}<-{p}", p, out, np.zeros(C, dtype=np.int64), np.arange(C))
            else:
                raise UnsupportedOperationError(
                    f"Operation '{name}' combines tensors with {n} and {C} channels; only equal channel counts "
                    "(or broadcasting a single channel) have a graph encoding."
                )
        return Val(out, cdim, tuple(shape))

    def cat(self, name: str, vals: list[Val], dim: int, shape: tuple) -> Val:
        _plain(name, vals)
        ref = next((v for v in vals if v.part is not None), vals[0])
        dim = dim % len(shape)
        if dim != ref.cdim % len(ref.shape):  # concatenation along a non-channel dim merges like an add
            return self.merge(name, vals, shape)
        vals = [self.materialize(v, dim) for v in vals]
        out = self.new_partition(name, int(shape[dim]), kind="merge")
        offset = 0
        for i, v in enumerate(vals):
            n = self.parts[v.part]["size"]
            idx = np.arange(n)
            self.identity_block(f"{name}<-{v.part}#{i}", v.part, out, idx, idx + offset)
            offset += n
        return Val(out, dim, tuple(shape))

    def select(self, name: str, v: Val, channels, out_shape: tuple, out_cdim: int) -> Val:
        """A slice of the channel dimension (indexing, split, chunk): a new partition fed by identity edges."""
        channels = np.asarray(channels, dtype=np.int64)
        if v.part is None:
            return Val(None, -1, tuple(out_shape), raw=v.raw)
        if channels.size == self.parts[v.part]["size"] and np.array_equal(channels, np.arange(channels.size)):
            return Val(v.part, out_cdim, tuple(out_shape))
        out = self.new_partition(name, channels.size, kind=self.parts[v.part]["kind"])
        self.identity_block(f"{name}<-{v.part}", v.part, out, channels, np.arange(channels.size))
        return Val(out, out_cdim, tuple(out_shape))

    def reshape(self, name: str, v: Val, out_shape: tuple) -> Val:
        """Follow the channel dimension through a shape change (view, reshape, flatten, indexing, reduction)."""
        in_shape = tuple(v.shape)
        out_shape = tuple(out_shape)
        if v.part is None:  # raw input: the first layer decides which dim holds its nodes
            return Val(None, -1, out_shape, raw=v.raw)
        if out_shape == in_shape:
            return v
        c = v.cdim % len(in_shape)
        if v.grid is not None:
            return self._unsplit(name, v, out_shape)
        C = in_shape[c]
        before = math.prod(in_shape[:c])
        after = math.prod(in_shape[c + 1 :])
        if math.prod(in_shape) == math.prod(out_shape):
            starts = [j for j in range(len(out_shape)) if math.prod(out_shape[:j]) == before]
            for j in starts:  # the channel dim kept whole (preferred: size-1 dims make the rest ambiguous)
                if out_shape[j] == C and math.prod(out_shape[j + 1 :]) == after:
                    return Val(v.part, j, out_shape)
            for j in starts:  # flatten channels with the trailing (spatial) dims
                if out_shape[j] == C * after and after > 1:
                    feat = self.new_partition(name, C * after, kind="feature", shape=in_shape[c:])
                    src = np.repeat(np.arange(C), after)
                    self.identity_block(f"{name}<-{v.part}", v.part, feat, src, np.arange(C * after))
                    return Val(feat, j, out_shape)
            for j in starts:  # the channel dim split over k > 1 dims of size > 1 (a channel shuffle)
                for k in range(2, len(out_shape) - j + 1):
                    dims = out_shape[j : j + k]
                    if math.prod(dims) == C and min(dims) > 1 and math.prod(out_shape[j + k :]) == after:
                        return Val(v.part, j, out_shape, grid=np.arange(C).reshape(dims),
                                   gdims=tuple(range(j, j + k)))
            return self.view(name, v, out_shape)
        else:  # a reduction or indexing over non-channel dims
            last_kept = c == len(in_shape) - 1 and out_shape and out_shape[-1] == C
            if last_kept:
                return Val(v.part, len(out_shape) - 1, out_shape)
            if len(out_shape) > c and out_shape[c] == C and math.prod(out_shape[:c]) == before:
                return Val(v.part, c, out_shape)
        raise UnsupportedOperationError(
            f"Operation '{name}' turns shape {in_shape} (nodes on dim {c}) into {out_shape}; the exporter cannot "
            "tell which output dimension holds the nodes. Supported: views that keep the channel dim, flattening "
            "channels with trailing dims, reductions and indexing over other dims."
        )

    def _unsplit(self, name: str, v: Val, out_shape: tuple) -> Val:
        """Merge a split channel dimension back: the (possibly permuted) order becomes identity edges."""
        big_in = [i for i, n in enumerate(v.shape) if n != 1]
        big_out = [i for i, n in enumerate(out_shape) if n != 1]
        if [v.shape[i] for i in big_in] == [out_shape[i] for i in big_out] and all(d in big_in for d in v.gdims):
            moved = {i: o for i, o in zip(big_in, big_out)}  # only size-1 dims added or removed (unsqueeze)
            gdims = tuple(moved[d] for d in v.gdims)
            return Val(v.part, min(gdims), tuple(out_shape), grid=v.grid, gdims=gdims)
        dims = sorted(v.gdims)
        a, k = dims[0], len(dims)
        C = v.grid.size
        if dims == list(range(a, a + k)):
            before, after = math.prod(v.shape[:a]), math.prod(v.shape[a + k :])
            for j in range(len(out_shape)):
                if math.prod(out_shape[:j]) == before and out_shape[j] == C and \
                        math.prod(out_shape[j + 1 :]) == after:
                    # flatten in memory order: grid axes sorted by the tensor dim they sit on
                    order = np.transpose(v.grid, np.argsort(v.gdims)).reshape(-1)
                    if np.array_equal(order, np.arange(C)):
                        return Val(v.part, j, tuple(out_shape))
                    out = self.new_partition(name, C, kind=self.parts[v.part]["kind"])
                    self.identity_block(f"{name}<-{v.part}", v.part, out, order, np.arange(C))
                    return Val(out, j, tuple(out_shape))
        if math.prod(v.shape) == math.prod(out_shape):
            return self.view(name, v, out_shape)
        raise UnsupportedOperationError(
            f"Operation '{name}' reshapes a split channel dimension {v.shape} into {out_shape}; only views "
            "(same number of elements) are supported."
        )

    def channel_ids(self, v: Val) -> np.ndarray:
        """The channel index of every element of ``v`` (an int array of ``v.shape``)."""
        shape = tuple(v.shape)
        if math.prod(shape) > 50_000_000:
            raise UnsupportedOperationError(
                f"A view of a tensor of shape {shape} is too large to follow; export with smaller example inputs "
                "(batch 1, short sequences): the graph does not depend on them.")
        if v.grid is None:
            c = v.cdim % len(shape)
            ids = np.arange(shape[c]).reshape([shape[c] if d == c else 1 for d in range(len(shape))])
        else:
            order = np.argsort(v.gdims)
            g = np.transpose(v.grid, order)
            dims = sorted(v.gdims)
            ids = g.reshape([shape[d] if d in dims else 1 for d in range(len(shape))])
        return np.broadcast_to(ids, shape)

    def view(self, name: str, v: Val, out_shape: tuple) -> Val:
        """Any view (same elements in C order): follow every element's channel index.

        The output dims along which the channel index varies hold the nodes. One such dim: the channels in their
        new order, through identity edges when reordered; a dim longer than the channel count is a
        space-to-channel merge (Swin's patch merging, a pixel unshuffle): output node ``j`` gets an identity edge
        from the input channel at position ``j``. Several such dims: the channel dimension split over them.
        """
        out_shape = tuple(out_shape)
        ids = self.channel_ids(v).reshape(out_shape)
        varying = [d for d in range(len(out_shape)) if out_shape[d] > 1 and
                   not np.array_equal(ids, np.broadcast_to(np.take(ids, [0], axis=d), out_shape))]
        index = tuple(slice(None) if d in varying else 0 for d in range(len(out_shape)))
        sub = ids[index]
        if not varying:
            if self.parts[v.part]["size"] == 1:
                return Val(v.part, len(out_shape) - 1, out_shape)
            raise UnsupportedOperationError(f"Operation '{name}' loses the channel dimension of {v.shape}.")
        if len(varying) == 1:
            d = varying[0]
            return self.select(name, Val(v.part, d, out_shape), sub.reshape(-1), out_shape, d)
        return Val(v.part, min(varying), out_shape, grid=np.ascontiguousarray(sub), gdims=tuple(varying))

    def attention(self, name: str, q: Val, k: Val, v: Val, q_dim: int, k_dim: int, out_shape: tuple,
                  bias=()) -> Val:
        """``softmax(q k^T) v`` written out (or scaled_dot_product_attention) on head-split tensors.

        ``q_dim``/``k_dim`` are the contracted (head-size) dims of q and k; v's head size is its last dim. The
        output channels (head ``h``, position ``i``) get an identity edge from the value channel at (h, i), and
        every query and key channel of head h feeds every output channel of head h (``edge_kind="score"``).
        Grouped-query attention (fewer key/value heads than query heads, repeated or with ``enable_gqa``) maps
        query head ``h`` to key/value head ``h // (heads / kv_heads)``: a key or value channel feeds every query
        head of its group. A traced tensor added to the scores (a learned position bias with one channel per
        head) feeds the outputs of its head with score edges too.
        """
        rows = []
        for tag, t, d in (("query", q, q_dim), ("key", k, k_dim), ("value", v, len(v.shape) - 1)):
            if not isinstance(t, Val) or t.grid is None or d % len(t.shape) not in t.gdims:
                raise UnsupportedOperationError(
                    f"Attention '{name}': the {tag} must be a layer output split into heads with the head size on "
                    "the contracted dim (view(B, T, heads, size).transpose(1, 2)).")
            ax = t.gdims.index(d % len(t.shape))
            g = np.moveaxis(t.grid, ax, -1)
            rows.append(g.reshape(-1, g.shape[-1]))  # row h: the channels of head h
        hq, hk, hv = rows
        H = hq.shape[0]
        for i in (1, 2):
            n = rows[i].shape[0]
            if n != H:
                if n == 0 or H % n:
                    raise UnsupportedOperationError(
                        f"Attention '{name}': {H} query heads cannot be grouped over {n} key/value heads.")
                rows[i] = np.repeat(rows[i], H // n, axis=0)  # grouped-query attention
        hq, hk, hv = rows
        dv = hv.shape[1]
        out = self.new_partition(name, H * dv, kind="merge")
        out_idx = np.arange(H * dv).reshape(H, dv)
        self.identity_block(f"{name}<-{v.part}", v.part, out, hv.reshape(-1), out_idx.reshape(-1))
        for tag, src_part, hs in (("q", q.part, hq), ("k", k.part, hk)):
            self.identity_block(f"{name}<-{src_part}:{tag}", src_part, out, edge_kind="score", product=(hs, out_idx))
        for bv in bias:
            if isinstance(bv, Val) and bv.part is not None and bv.grid is None and \
                    self.parts[bv.part]["size"] == H:
                self.identity_block(f"{name}<-{bv.part}:bias", bv.part, out, edge_kind="score",
                                    product=(np.arange(H)[:, None], out_idx))
            elif isinstance(bv, Val) and bv.part is not None:
                raise UnsupportedOperationError(
                    f"Attention '{name}': a traced tensor added to the scores has {self.parts[bv.part]['size']} "
                    f"channels; only a bias with one channel per head ({H}) has a graph encoding.")
        ax = v.gdims.index(len(v.shape) - 1)
        if v.grid.ndim == 2:
            grid = out_idx if ax == 1 else out_idx.T
        elif math.prod(v.grid.shape) == H * dv:
            grid = np.moveaxis(np.arange(H * dv).reshape(np.moveaxis(v.grid, ax, -1).shape), -1, ax)
        else:
            raise UnsupportedOperationError(f"Attention '{name}': cannot lay out the heads of the output.")
        return Val(out, min(v.gdims), tuple(out_shape), grid=grid, gdims=v.gdims)

    def build(self, outputs: list[Val]) -> MultipartiteGraph:
        for v in outputs:
            if v is not None and v.part is not None and self.parts[v.part]["role"] != "input":
                self.parts[v.part]["role"] = "output"
        parts = [Partition(name=n, **d) for n, d in self.parts.items()]
        G = MultipartiteGraph(parts, self.blocks, masks=self.masks or None, param_shapes=self.param_shapes)
        G.channel_uses = tuple(self.uses)
        return G


def _plain(name, vals):
    if any(v.grid is not None for v in vals):
        raise UnsupportedOperationError(
            f"Operation '{name}' uses a tensor whose channel dimension is split over several dims; merge the split "
            "dims back (a reshape) first."
        )


def _align(cdim: int, from_shape: tuple, to_shape: tuple) -> int:
    """Position of dimension ``cdim`` of ``from_shape`` in ``to_shape``, aligning trailing dims (broadcasting)."""
    from_rank, to_rank = len(from_shape), len(to_shape)
    c = cdim % from_rank
    return max(0, c + to_rank - from_rank)
