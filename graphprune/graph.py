"""The multipartite graph of a neural network: partitions, edge blocks and masks.

A feed-forward network is a sequence of bipartite graphs. Nodes are neurons (Linear) or channels (ConvNd); every
element of a weight tensor is one edge, weighted by ``|w|``. :class:`MultipartiteGraph` holds this graph
explicitly but cheaply: a *weight* block is backed by its parameter tensor (edge ``e`` is parameter element ``e``
in C order), so a block's mask has the parameter's shape and writing masks back into the model is exact. COO
indices are produced on demand and never stored for weight blocks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch

from ._validation import VIEWS as _VIEWS
from ._validation import Boolean, check_mask, check_mask_key, check_param
from .errors import GraphValidationError, MaskError, ParameterError
from .layout import LAYOUTS, Grid, check_view

__all__ = ["Partition", "Block", "MultipartiteGraph", "ROLES", "LAYOUTS"]

ROLES = ("input", "hidden", "output")
VIEWS = _VIEWS


@dataclass(frozen=True)
class Partition:
    """One layer of nodes.

    Parameters
    ----------
    name : str
        Unique name, usually the module that produces the nodes (``"features.0"``) or the traced operation.
    size : int
        Number of nodes.
    role : {"input", "hidden", "output"}
        Where the partition sits in the network.
    shape : tuple of int
        The per-sample tensor shape the nodes index: ``(C,)`` for channels or neurons, ``(C, H, W)`` for the
        feature partition made by flattening a feature map.
    kind : str
        ``"channel"``, ``"neuron"``, ``"feature"``, ``"token"`` or ``"merge"`` (a residual add or a concatenation).
    """

    name: str
    size: int
    role: str = "hidden"
    shape: tuple = ()
    kind: str = "neuron"


@dataclass(eq=False)
class Block:
    """Edges from one partition to the next.

    A ``"weight"`` block is backed by (a slice along dim 0 of) one parameter tensor: edge ``e`` is element ``e`` of
    ``weight`` in C order. An ``"identity"`` block holds structural, unprunable edges (residual adds,
    concatenation, flatten, attention scores) as explicit index arrays with weight 1.

    Attributes
    ----------
    name, src, dst : str
        Block name and the names of its source and destination partitions.
    kind : {"weight", "identity"}
    param : str or None
        Key of the mask for a weight block: the parameter's qualified name (``"features.0.weight"``).
    weight : torch.Tensor or None
        The parameter (or its slice), detached; shares storage with the model.
    bias : torch.Tensor or None
        The bias added to the destination nodes by the same layer (a module's ``bias`` beside its ``weight``: a
        ``(n_dst,)`` tensor, detached, sharing storage with the model); None when the layer has none, for a slice
        of a parameter, or when the export did not find it. Not an edge: read only by rules that need a node's
        offset (``SpectralSparsifier``'s ``positive_paths``).
    param_slice : tuple of int or None
        ``(start, stop)`` rows of the parameter backing this block, when the block is a slice (q, k, v of
        ``in_proj_weight``).
    layout : {"linear", "embedding", "conv", "conv_transpose"}
        How a parameter element maps to (src, dst): linear ``(out, in)``; embedding ``(in, out)``;
        conv ``(out, in/groups, *k)``; conv_transpose ``(in, out/groups, *k)``.
    groups : int
        Convolution groups (1 otherwise).
    edge_kind : {"feature", "score"}
        ``"score"`` marks edges that carry influence through attention scores (query and key channels to the
        attention output) rather than through features.
    src_index, dst_index : numpy.ndarray or None
        Local node indices of an identity block's edges. For a block given by ``product`` they are built on each
        read (and kept only for blocks of at most :attr:`Grid.EDGE_CACHE_LIMIT
        <graphprune.layout.Grid.EDGE_CACHE_LIMIT>` edges).
    product : tuple of two numpy.ndarray or None
        An identity block that is a union of complete bipartite groups, held compactly: ``(src_groups,
        dst_groups)`` of shapes ``(G, a)`` and ``(G, b)``; group ``g`` has an edge from every ``src_groups[g, i]``
        to every ``dst_groups[g, j]``, in the order ``g, i, j``. Attention score edges (every query channel of a
        head to every output channel of the head) are stored this way: ``O(heads x head size)`` numbers instead of
        two int64 arrays of ``heads x head size^2``, so a shape-only graph of a 7B model holds no score index.
    """

    name: str
    src: str
    dst: str
    kind: str = "weight"
    param: str | None = None
    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    param_slice: tuple | None = None
    layout: str = "linear"
    groups: int = 1
    edge_kind: str = "feature"
    src_index: np.ndarray | None = None
    dst_index: np.ndarray | None = None
    meta: dict = field(default_factory=dict)
    product: tuple | None = None

    _grid: tuple | None = field(default=None, repr=False, compare=False)

    # -- layout: the index arithmetic lives in graphprune.layout.Grid ------------------------------------------
    @property
    def grid(self) -> Grid:
        """The block's :class:`~graphprune.layout.Grid` (weight blocks only): element <-> edge arithmetic, rows of
        the parameter, node broadcasts and the biadjacency and its inverse. Cached while the weight's shape,
        layout, groups and slice stay the same."""
        if not self.is_weight:
            raise GraphValidationError(f"Block {self.name!r} is an identity block; it has no weight layout.")
        key = (self.layout, tuple(self.weight.shape), self.groups, self.param_slice)
        if self._grid is None or self._grid[0] != key:
            self._grid = (key, Grid(*key))
        return self._grid[1]

    def rows(self, full):
        """The block's rows of a full-parameter tensor (a view; ``full`` itself when the block is the whole
        parameter). See :meth:`Grid.rows <graphprune.layout.Grid.rows>`."""
        return self.grid.rows(full)

    def set_rows(self, full, part):
        """Write ``part`` (shaped like ``weight``) into the block's rows of ``full`` in place; returns ``full``."""
        return self.grid.set_rows(full, part)

    def and_rows(self, full, part):
        """``full[block rows] &= part`` in place; returns ``full``."""
        return self.grid.and_rows(full, part)

    def or_rows(self, full, part):
        """``full[block rows] |= part`` in place; returns ``full``."""
        return self.grid.or_rows(full, part)

    # -- sizes -------------------------------------------------------------------------------------------------
    @property
    def is_weight(self) -> bool:
        return self.kind == "weight"

    @property
    def num_edges(self) -> int:
        if self.is_weight:
            return int(self.weight.numel())
        if self.product is not None and self.__dict__.get("_src_index") is None:
            a, b = self.product
            return int(a.shape[0]) * int(a.shape[1]) * int(b.shape[1])
        return int(self.src_index.shape[0])

    @property
    def kernel_size(self) -> int:
        """Number of parallel edges per connected channel pair (``prod(k)`` for convolutions, else 1)."""
        return self.grid.kernel_size if self.is_weight else 1

    @property
    def n_src(self) -> int:
        """Number of source nodes in the channel view."""
        if not self.is_weight:
            return int(self.meta["n_src"])
        return self.grid.n_src

    @property
    def n_dst(self) -> int:
        if not self.is_weight:
            return int(self.meta["n_dst"])
        return self.grid.n_dst

    def view_shape(self, view: str = "channel") -> tuple[int, int]:
        """``(n_dst, n_src)`` of the biadjacency in ``view``; rolled conv sources are ``(channel, tap)`` pairs."""
        check_view(view)
        if not self.is_weight:
            return self.n_dst, self.n_src
        return self.grid.view_shape(view)

    # -- edges ---------------------------------------------------------------------------------------------------
    def edge_index(self, view: str = "channel") -> tuple[np.ndarray, np.ndarray]:
        """Local ``(src, dst)`` node indices of every edge, in parameter (C) order.

        In the ``"rolled"`` view a convolution's source nodes are ``(input channel, kernel tap)`` pairs,
        numbered ``channel * prod(k) + tap``: the per-layer bipartite encoding of the Ramanujan-graph pruning
        literature, with no parallel edges. For linear and embedding blocks both views coincide.

        The arrays are cached per view for blocks of at most :attr:`Grid.EDGE_CACHE_LIMIT
        <graphprune.layout.Grid.EDGE_CACHE_LIMIT>` edges (shared: do not modify them); larger blocks compute them
        on each call. The graph's own analyses use :meth:`broadcast_nodes` and
        :meth:`MultipartiteGraph.block_pairs` instead, which need no per-edge index.
        """
        check_view(view)
        if not self.is_weight:
            return self.src_index, self.dst_index
        return self.grid.edge_index(view)

    def param_index(self) -> np.ndarray:
        """Flat index into the whole parameter (C order) of every edge; -1 for identity edges."""
        if not self.is_weight:
            return np.full(self.num_edges, -1, dtype=np.int64)
        return self.grid.param_index()

    def broadcast_nodes(self, src_values: np.ndarray, dst_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-node values of the block's source and destination partitions (channel view), as two arrays that
        broadcast to ``weight.shape``: edge ``e`` reads ``src_values[src(e)]`` and ``dst_values[dst(e)]``.

        No per-edge index is built: a linear block's values are a row and a column; a convolution's are
        ``(out, in/groups)`` lookups with singleton kernel dims.
        """
        if not self.is_weight:
            s, d = self.src_index, self.dst_index
            return src_values[s], dst_values[d]
        return self.grid.broadcast_nodes(src_values, dst_values)

    def edge_values(self, R: torch.Tensor, view: str = "channel") -> torch.Tensor:
        """The inverse of :meth:`MultipartiteGraph.biadjacency`: the values ``R[dst, src]`` of an
        ``(n_dst, n_src)`` matrix in edge (parameter) order, flat (every kernel tap of a channel pair reads the
        pair's value in the channel view)."""
        if self.is_weight:
            return self.grid.from_biadjacency(R, view)
        s, d = self.edge_index(view)
        return R[torch.as_tensor(d, device=R.device), torch.as_tensor(s, device=R.device)]

    def abs_weight(self) -> torch.Tensor:
        """``|w|`` of every edge, flattened in parameter order (ones for identity blocks)."""
        if self.is_weight:
            return self.weight.detach().abs().reshape(-1)
        return torch.ones(self.num_edges, dtype=torch.float32)

    def __repr__(self) -> str:
        if self.is_weight:
            extra = f", param='{self.param}', shape={tuple(self.weight.shape)}, layout='{self.layout}'"
            if self.groups != 1:
                extra += f", groups={self.groups}"
            if self.param_slice is not None:
                extra += f", rows={self.param_slice}"
        else:
            extra = f", edges={self.num_edges}"
        if self.edge_kind != "feature":
            extra += f", edge_kind='{self.edge_kind}'"
        return f"Block('{self.name}', {self.kind}, '{self.src}' -> '{self.dst}'{extra})"


def _product_side(a, b, which):
    """One side of a :attr:`Block.product`'s edge list: for each group ``g``, every ``a[g, i]`` to every ``b[g, j]``,
    in the order ``g, i, j``; ``which`` 0 gives the sources, 1 the destinations."""
    if which == 0:
        return np.repeat(a, b.shape[1], axis=1).reshape(-1)
    return np.broadcast_to(b[:, None, :], (b.shape[0], a.shape[1], b.shape[1])).reshape(-1)


def _identity_index(which: int, name: str):
    key = "_" + name

    def get(self):
        arr = self.__dict__.get(key)
        if arr is None and self.product is not None:
            a, b = self.product
            arr = _product_side(a, b, which)
            if arr.size <= Grid.EDGE_CACHE_LIMIT:
                self.__dict__[key] = arr
        return arr

    def put(self, value):
        self.__dict__[key] = value

    return property(get, put, doc=f"Local {('source', 'destination')[which]} node index of each identity edge.")


# Identity indices are properties over a stored array or the compact ``product`` (the dataclass __init__ writes
# through the setter, so ``Block(..., src_index=s)`` keeps working).
Block.src_index = _identity_index(0, "src_index")
Block.dst_index = _identity_index(1, "dst_index")


class MultipartiteGraph:
    """A neural network as an explicit multipartite (layered) graph.

    Parameters
    ----------
    partitions : iterable of Partition
        Node layers, in topological order.
    blocks : iterable of Block
        Edge blocks between partitions.
    masks : mapping of str to torch.Tensor, optional
        Initial masks keyed by parameter name; bool tensors of the parameter's shape. Missing parameters are dense.
    param_shapes : mapping of str to tuple, optional
        Full shapes of the parameters that back weight blocks (inferred from the blocks when omitted; needed when
        a block is a slice of its parameter).

    Notes
    -----
    Nodes are numbered globally partition by partition, in the order given. Edge weights are ``|w|``; parallel
    convolution edges (``prod(k)`` per channel pair) are kept as separate edges and summed where a simple graph is
    needed (adjacency, Laplacian). A parameter used by several modules (tied weights) backs several blocks that
    share one mask. The graph is never mutated by graphprune: :meth:`with_masks` returns a new graph that shares
    the weight tensors.

    Examples
    --------
    >>> import torch, graphprune
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    >>> G = graphprune.from_model(model, torch.randn(1, 4))
    >>> G.num_nodes, G.num_edges
    (9, 18)
    >>> [p.name for p in G.partitions]
    ['input', '0', '2']
    """

    def __init__(self, partitions: Iterable[Partition], blocks: Iterable[Block], masks=None, param_shapes=None):
        self._partitions = list(partitions)
        self._blocks = list(blocks)
        self._pindex = {p.name: i for i, p in enumerate(self._partitions)}
        self._bindex = {b.name: i for i, b in enumerate(self._blocks)}
        if len(self._pindex) != len(self._partitions):
            raise GraphValidationError("Partition names must be unique.")
        if len(self._bindex) != len(self._blocks):
            raise GraphValidationError("Block names must be unique.")
        sizes = np.array([p.size for p in self._partitions], dtype=np.int64)
        self._offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        shapes = dict(param_shapes or {})
        for b in self._blocks:
            if b.is_weight and b.param not in shapes:
                shapes[b.param] = tuple(b.weight.shape)
        self._param_shapes = shapes
        self.left_out: dict[str, str] = {}  # prunable weights the exporter left out, with the reason
        self._masks = {}
        if masks:
            self._masks = self._checked_masks(masks)

    # -- structure ---------------------------------------------------------------------------------------------
    @property
    def partitions(self) -> list[Partition]:
        return list(self._partitions)

    @property
    def blocks(self) -> list[Block]:
        return list(self._blocks)

    @property
    def weight_blocks(self) -> list[Block]:
        return [b for b in self._blocks if b.is_weight]

    @property
    def params(self) -> list[str]:
        """Names of the parameters that back weight blocks, in first-use order."""
        return list(dict.fromkeys(b.param for b in self._blocks if b.is_weight))

    @property
    def param_shapes(self) -> dict:
        return dict(self._param_shapes)

    def partition(self, name: str) -> Partition:
        try:
            return self._partitions[self._pindex[name]]
        except KeyError:
            raise GraphValidationError(
                f"No partition named {name!r}. Known partitions: {list(self._pindex)}."
            ) from None

    def block(self, name: str) -> Block:
        try:
            return self._blocks[self._bindex[name]]
        except KeyError:
            raise GraphValidationError(f"No block named {name!r}. Known blocks: {list(self._bindex)}.") from None

    def blocks_of(self, param: str) -> list[Block]:
        """Every block backed by parameter ``param`` (several for tied or sliced parameters)."""
        return [b for b in self._blocks if b.is_weight and b.param == param]

    def partition_index(self, name: str) -> int:
        self.partition(name)
        return self._pindex[name]

    def node_offset(self, partition: str) -> int:
        """Global index of the first node of ``partition``."""
        return int(self._offsets[self.partition_index(partition)])

    @property
    def num_nodes(self) -> int:
        return int(self._offsets[-1])

    @property
    def num_edges(self) -> int:
        """Number of edges (weight and identity), counting masked-out edges as absent."""
        return sum(int(self.block_mask(b).sum()) if b.is_weight else b.num_edges for b in self._blocks)

    @property
    def num_weight_edges(self) -> int:
        """Number of weight edges of the dense graph (every use of a tied parameter counts)."""
        return sum(b.num_edges for b in self._blocks if b.is_weight)

    # -- masks ---------------------------------------------------------------------------------------------------
    @property
    def masks(self) -> dict[str, torch.Tensor]:
        """Masks keyed by parameter name: bool tensors of the parameter's shape (dense parameters included)."""
        out = {}
        for name in self.params:
            m = self._masks.get(name)
            if m is None:
                m = torch.ones(self._param_shapes[name], dtype=torch.bool)
            out[name] = m.clone()
        return out

    @property
    def is_masked(self) -> bool:
        return any(not bool(m.all()) for m in self._masks.values())

    def param_mask(self, param: str) -> torch.Tensor:
        """The mask of one parameter (full shape). Read-only view; do not modify."""
        if param not in self._param_shapes:
            raise MaskError(f"No parameter named {param!r} backs a block of this graph. Known: {self.params}.")
        m = self._masks.get(param)
        if m is None:
            return torch.ones(self._param_shapes[param], dtype=torch.bool)
        return m

    def block_mask(self, block: Block | str) -> torch.Tensor:
        """The mask of one weight block, shaped like ``block.weight`` (all True for identity blocks)."""
        b = self.block(block) if isinstance(block, str) else block
        if not b.is_weight:
            return torch.ones(b.num_edges, dtype=torch.bool)
        return b.rows(self.param_mask(b.param))

    def block_kept(self, block: Block | str) -> int:
        """Number of kept edges of one block: its size when its parameter has no mask (no mask is built), else the
        True entries of :meth:`block_mask`."""
        b = self.block(block) if isinstance(block, str) else block
        if not b.is_weight or self._masks.get(b.param) is None:
            return b.num_edges
        return int(np.count_nonzero(self.block_mask(b).numpy()))

    def _checked_masks(self, masks: Mapping, owner: str = "MultipartiteGraph.with_masks") -> dict:
        if not isinstance(masks, Mapping):
            raise MaskError(f"The 'masks' parameter of {owner} must be a dict of parameter name -> bool tensor. "
                            f"Got {type(masks).__name__} instead.")
        out = {}
        for name, m in masks.items():
            check_mask_key(name, owner)
            if name not in self._param_shapes:
                raise MaskError(
                    f"The 'masks' parameter of {owner} has a mask for {name!r}, which backs no block of the graph. "
                    f"The graph's parameters are: {self.params}."
                )
            m = check_mask(name, m, self._param_shapes[name], owner=owner, numeric=True)
            out[name] = m.detach().to("cpu").clone()
        return out

    def with_masks(self, masks: Mapping | None, *, combine: bool = True) -> MultipartiteGraph:
        """A new graph with ``masks`` applied; ``self`` is unchanged and the weights are shared.

        Parameters
        ----------
        masks : mapping of str to torch.Tensor, or None
            Masks keyed by parameter name: bool tensors of the parameter's shape; integer or floating tensors
            holding only 0 and 1 are accepted and converted. Anything else raises MaskError. ``None`` removes all
            masks (when ``combine=False``).
        combine : bool, default True
            Intersect with the graph's current masks (masks only shrink). With False, replace them.
        """
        new = self._checked_masks(masks) if masks is not None else {}
        check_param("combine", combine, [Boolean()], "MultipartiteGraph.with_masks")
        if combine:
            merged = {k: v.clone() for k, v in self._masks.items()}
            for k, v in new.items():
                merged[k] = merged[k] & v if k in merged else v
        else:
            merged = new
        g = MultipartiteGraph.__new__(MultipartiteGraph)
        g.__dict__.update(self.__dict__)
        g._masks = merged
        return g

    def density(self, *, per_param: bool = False):
        """Fraction of prunable weights kept (each parameter counted once, tied uses included once).

        Parameters
        ----------
        per_param : bool, default False
            Return a dict parameter -> density instead of the overall float.
        """
        total = {n: int(math.prod(self._param_shapes[n])) for n in self.params}
        kept = {n: total[n] if self._masks.get(n) is None else int(np.count_nonzero(self._masks[n].numpy()))
                for n in self.params}  # no all-True mask is built for an unmasked parameter
        if per_param:
            return {n: kept[n] / total[n] for n in kept}
        t = sum(total.values())
        return sum(kept.values()) / t if t else 1.0

    # -- global views --------------------------------------------------------------------------------------------
    def edge_arrays(self, *, masked: bool = True, weight_blocks_only: bool = False) -> dict:
        """Every (kept) edge as global arrays, in the channel view (the rolled view exists per block only).

        Keys: ``src``, ``dst`` (global node ids), ``value`` (signed w; 1 for identity edges), ``weight``
        (``|w|``), ``block`` (block index), ``param_index`` (flat index into the whole parameter, -1 for identity
        edges). The one place where kept edges are gathered; adjacency, degrees and the converters build on it.
        """
        cols = {k: [] for k in ("src", "dst", "value", "block", "param_index")}
        for bi, b in enumerate(self._blocks):
            if weight_blocks_only and not b.is_weight:
                continue
            s, d = b.edge_index("channel")
            if b.is_weight:
                val = b.weight.detach().reshape(-1).to(torch.float64).cpu().numpy()
                idx = b.param_index()  # index into the whole parameter
                if masked:
                    keep = self.block_mask(b).reshape(-1).numpy()
                    s, d, val, idx = s[keep], d[keep], val[keep], idx[keep]
            else:
                val = np.ones(s.shape[0])
                idx = b.param_index()
            cols["src"].append(s + self._offsets[self._pindex[b.src]])
            cols["dst"].append(d + self._offsets[self._pindex[b.dst]])
            cols["value"].append(val)
            cols["block"].append(np.full(s.shape[0], bi, dtype=np.int64))
            cols["param_index"].append(idx)
        out = {k: np.concatenate(v) if v else np.zeros(0, dtype=np.float64 if k == "value" else np.int64)
               for k, v in cols.items()}
        out["weight"] = np.abs(out["value"])
        return out

    def global_edges(self, *, masked: bool = True, weight_blocks_only: bool = False):
        """``(src, dst, |w|, block id)`` of every (kept) edge; see :meth:`edge_arrays`."""
        e = self.edge_arrays(masked=masked, weight_blocks_only=weight_blocks_only)
        return e["src"], e["dst"], e["weight"], e["block"]

    # -- block views: per-block reductions, no per-edge arrays ------------------------------------------------------
    def _folded(self, b: Block, weighted: bool) -> torch.Tensor:
        """Kept edges of a weight block summed over kernel taps: ``(out, in/g)`` for convolutions (``(in, out/g)``
        transposed), the parameter's own 2-D shape otherwise; counts (int64) or ``|w|`` sums (float64)."""
        m = self.block_mask(b)
        if weighted:
            x = b.weight.detach().abs().to("cpu", torch.float64)
            if not bool(m.all()):
                x = x.masked_fill_(~m, 0.0)
        else:
            x = m
        return b.grid.fold(x, torch.float64 if weighted else torch.int64)

    def block_degrees(self, block: Block | str, *, weighted: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """``(out-degree of each source node, in-degree of each destination node)`` within one block, counting
        kept edges (parallel convolution edges separately), or summing ``|w|`` with ``weighted=True``.

        Reductions of the block's mask (folded over kernel taps); no per-edge index is built.
        """
        b = self.block(block) if isinstance(block, str) else block
        if not b.is_weight:  # identity edges weigh 1
            kind = np.float64 if weighted else np.int64
            return (np.bincount(b.src_index, minlength=b.n_src).astype(kind),
                    np.bincount(b.dst_index, minlength=b.n_dst).astype(kind))
        return b.grid.node_sums(self._folded(b, weighted), torch.float64 if weighted else torch.int64)

    def block_pairs(self, block: Block | str, *, weighted: bool = False, masked: bool = True):
        """Kept edges of one block per ``(dst, src)`` node pair, as a ``scipy.sparse.csr_array`` of shape
        ``(n_dst, n_src)`` (channel view): the number of parallel edges, or their summed ``|w|``.

        Built from the block's mask folded over kernel taps (convolutions) or from the mask itself (linear), so its
        size is the number of connected pairs, never one entry per kernel tap.
        """
        b = self.block(block) if isinstance(block, str) else block
        shape = (b.n_dst, b.n_src)
        if not b.is_weight:
            M = sp.csr_array((np.ones(b.src_index.size), (b.dst_index, b.src_index)), shape=shape)
            M.sum_duplicates()
            return M
        H = self if masked else self.with_masks(None, combine=False)
        return b.grid.pairs(H._folded(b, weighted).numpy())

    def adjacency(self, *, directed: bool = False, weighted: bool = True, include_identity: bool = True):
        """Whole-graph adjacency as ``scipy.sparse.csr_array`` (N x N); parallel edges are summed.

        Directed: ``A[u, v]`` is the total weight of edges u -> v. Undirected (default): ``A + A.T``. Assembled
        from :meth:`block_pairs` (one entry per connected node pair), not from per-edge arrays.
        """
        rows, cols, vals = [], [], []
        for b in self._blocks:
            if not include_identity and not b.is_weight:
                continue
            P = self.block_pairs(b, weighted=weighted).tocoo()
            rows.append(P.col.astype(np.int64) + self._offsets[self._pindex[b.src]])
            cols.append(P.row.astype(np.int64) + self._offsets[self._pindex[b.dst]])
            vals.append(P.data)  # parallel edges: their count, or their summed |w|
        n = self.num_nodes
        if rows:
            rows, cols, vals = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
        else:
            rows = cols = np.zeros(0, dtype=np.int64)
            vals = np.zeros(0)
        A = sp.csr_array((vals, (rows, cols)), shape=(n, n))
        A.sum_duplicates()
        if not directed:
            A = (A + A.T).tocsr()
        return A

    def laplacian(self, *, weighted: bool = True, include_identity: bool = True):
        """Combinatorial Laplacian ``L = D - A`` of the undirected graph (``scipy.sparse.csr_array``)."""
        A = self.adjacency(weighted=weighted, include_identity=include_identity)
        deg = np.asarray(A.sum(axis=1)).ravel()
        return (sp.diags_array(deg) - A).tocsr()

    def degrees(self, direction: str = "all", *, weighted: bool = False, include_identity: bool = True):
        """Degree of every node (global order), counting kept edges; parallel edges count separately.

        Parameters
        ----------
        direction : {"in", "out", "all"}
        weighted : bool
            Sum ``|w|`` (strength) instead of counting edges.
        include_identity : bool
            Count structural (identity) edges too.
        """
        if direction not in ("in", "out", "all"):
            raise ParameterError(f"The 'direction' parameter must be 'in', 'out' or 'all'. Got {direction!r}.")
        n = self.num_nodes
        out = np.zeros(n, dtype=np.float64 if weighted else np.int64)
        for b in self._blocks:  # per-block reductions of the masks (block_degrees), no per-edge arrays
            if not include_identity and not b.is_weight:
                continue
            so, di = self.block_degrees(b, weighted=weighted)
            if direction in ("out", "all"):
                a = self._offsets[self._pindex[b.src]]
                out[a : a + so.size] += so
            if direction in ("in", "all"):
                a = self._offsets[self._pindex[b.dst]]
                out[a : a + di.size] += di
        return out

    def biadjacency(self, block: Block | str, *, view: str = "channel", weighted: bool = True,
                    masked: bool = True, format: str = "scipy", scale: torch.Tensor | None = None,
                    dtype: torch.dtype | None = None):
        """Biadjacency of one block, shape ``(n_dst, n_src)`` (rows are outputs, like a weight matrix).

        Parallel convolution edges are summed in the channel view. ``format="scipy"`` gives a
        ``scipy.sparse.csr_array`` (float64); ``format="torch"`` a dense tensor on the weight's device and dtype.
        The mapping from edge order (parameter order) to matrix entries is :meth:`Block.edge_index`.
        ``scale`` (shaped like ``block.weight``) multiplies the edge weights, e.g. a sparsifier's importance
        weights. ``dtype`` sets the torch result's dtype (parallel edges are summed in it).
        """
        b = self.block(block) if isinstance(block, str) else block
        if format not in ("scipy", "torch"):
            raise ParameterError(f"The 'format' parameter must be 'scipy' or 'torch'. Got {format!r}.")
        shape = b.view_shape(view)
        w = b.abs_weight() if weighted else torch.ones(b.num_edges)  # a fresh tensor: edited in place below
        if dtype is not None:
            w = w.to(dtype)
        if scale is not None:
            w = w * scale.reshape(-1).to(w.device, w.dtype)
        if masked and b.is_weight:
            keep = self.block_mask(b).reshape(-1)
            if not bool(keep.all()):
                w = w.masked_fill_(~keep.to(w.device), 0)
        if format == "torch":
            if b.is_weight:
                return b.grid.biadjacency(w, view, format="torch")
            s, d = b.edge_index(view)
            M = torch.zeros(shape, dtype=w.dtype, device=w.device)
            idx = (torch.as_tensor(d, device=w.device), torch.as_tensor(s, device=w.device))
            return M.index_put_(idx, w, accumulate=True)
        wn = w.detach().to(torch.float64).cpu().numpy()
        keep = wn != 0 if masked else slice(None)
        if b.is_weight:
            return b.grid.biadjacency(wn, view, format="scipy", keep=keep)
        s, d = b.edge_index(view)
        M = sp.csr_array((wn[keep], (d[keep], s[keep])), shape=shape)
        M.sum_duplicates()
        return M

    # -- checks and display --------------------------------------------------------------------------------------
    def validate(self, *, raise_on_error: bool = True, allow_dangling: bool = False) -> list[str]:
        """Check indices, shapes, masks and partitions; return the problems found (raise on any by default).

        Problems are named: a block referencing an unknown partition, a weight block whose shape does not match
        its partitions' sizes, out-of-range identity indices, a mask of the wrong shape, a dangling partition
        (no edge in or out), a missing input or output role.
        """
        problems = []
        touched = set()
        for b in self._blocks:
            for side in ("src", "dst"):
                if getattr(b, side) not in self._pindex:
                    problems.append(f"block '{b.name}': unknown {side} partition '{getattr(b, side)}'")
            if b.src not in self._pindex or b.dst not in self._pindex:
                continue
            touched.update((b.src, b.dst))
            ns, nd = self.partition(b.src).size, self.partition(b.dst).size
            if b.is_weight:
                if b.layout not in LAYOUTS:
                    problems.append(f"block '{b.name}': unknown layout '{b.layout}'")
                    continue
                if b.n_src != ns or b.n_dst != nd:
                    problems.append(
                        f"block '{b.name}': weight {tuple(b.weight.shape)} ({b.layout}) connects {b.n_src} -> "
                        f"{b.n_dst} nodes but partitions '{b.src}' and '{b.dst}' have {ns} and {nd}"
                    )
                if b.param not in self._param_shapes:
                    problems.append(f"block '{b.name}': parameter '{b.param}' has no shape")
            else:
                s, d = b.src_index, b.dst_index
                if s is None or d is None or s.shape != d.shape:
                    problems.append(f"block '{b.name}': identity indices missing or of different lengths")
                    continue
                if s.size and (s.min() < 0 or s.max() >= ns):
                    problems.append(f"block '{b.name}': source index out of range [0, {ns})")
                if d.size and (d.min() < 0 or d.max() >= nd):
                    problems.append(f"block '{b.name}': destination index out of range [0, {nd})")
        problems += self._param_accounting()
        for name, m in self._masks.items():
            if tuple(m.shape) != tuple(self._param_shapes.get(name, ())):
                problems.append(f"mask '{name}': shape {tuple(m.shape)} != parameter {self._param_shapes.get(name)}")
        for p in self._partitions:
            if p.role not in ROLES:
                problems.append(f"partition '{p.name}': unknown role '{p.role}'")
            if p.name not in touched and len(self._partitions) > 1 and not allow_dangling:
                problems.append(f"partition '{p.name}': dangling (no edge in or out)")
        roles = {p.role for p in self._partitions}
        for r in ("input", "output"):
            if r not in roles:
                problems.append(f"graph: no partition with role '{r}'")
        if problems and raise_on_error:
            raise GraphValidationError("Invalid MultipartiteGraph:\n  " + "\n  ".join(problems))
        return problems

    def _param_accounting(self) -> list[str]:
        """Each parameter's blocks account for its elements exactly: whole-parameter blocks (one per use, tied
        parameters have several) have its shape, row slices tile its rows once, and every block's tensor is laid
        out with dim 0 outermost (a transposed view would put masks on the wrong elements)."""
        problems = []
        by_param = {}
        for b in self._blocks:
            if b.is_weight and b.param in self._param_shapes:
                by_param.setdefault(b.param, []).append(b)
        for name, blocks in by_param.items():
            shape = tuple(self._param_shapes[name])
            rows = []
            for b in blocks:
                w = b.weight
                if b.param_slice is None:
                    if tuple(w.shape) != shape:
                        problems.append(f"block '{b.name}': weight {tuple(w.shape)} is not parameter '{name}' {shape}")
                else:
                    start, stop = b.param_slice
                    rows.append((start, stop))
                    if tuple(w.shape) != (stop - start,) + shape[1:]:
                        problems.append(f"block '{b.name}': weight {tuple(w.shape)} is not rows {start}:{stop} of "
                                        f"parameter '{name}' {shape}")
                big = [d for d in range(w.dim()) if w.shape[d] > 1]
                if w.dim() >= 2 and big and big[0] == 0 and w.stride(0) < max(w.stride(d) for d in big):
                    problems.append(f"block '{b.name}': weight of parameter '{name}' is a transposed view (strides "
                                    f"{w.stride()}); its edges would not be the parameter's elements in order")
            if rows:
                covered = sorted(rows)
                pos = 0
                for start, stop in covered:
                    if start != pos:
                        break
                    pos = stop
                if pos != (shape[0] if shape else 0) or any(s < e for (_, e), (s, _) in zip(covered, covered[1:])):
                    problems.append(f"parameter '{name}': its blocks cover rows {covered}, not each of its "
                                    f"{shape[0] if shape else 0} rows exactly once")
        return problems

    def __repr__(self) -> str:
        nw = len(self.weight_blocks)
        return (
            f"MultipartiteGraph(partitions={len(self._partitions)}, blocks={len(self._blocks)} "
            f"({nw} weight, {len(self._blocks) - nw} identity), nodes={self.num_nodes}, "
            f"weight_edges={self.num_weight_edges}, density={self.density():.4f})"
        )

    def summary(self) -> str:
        """A readable table of partitions and blocks (kept and total edges per block)."""
        lines = [repr(self), "", f"{'partition':<32} {'role':<7} {'kind':<8} {'size':>8}  shape"]
        for p in self._partitions:
            lines.append(f"{p.name[:32]:<32} {p.role:<7} {p.kind:<8} {p.size:>8}  {p.shape}")
        lines += ["", f"{'block':<32} {'kind':<9} {'src -> dst':<40} {'kept':>10} {'total':>10} {'density':>8}"]
        for b in self._blocks:
            total = b.num_edges
            kept = int(self.block_mask(b).sum()) if b.is_weight else total
            kind = b.kind if b.edge_kind == "feature" else f"{b.kind}*"
            arrow = f"{b.src} -> {b.dst}"
            lines.append(
                f"{b.name[:32]:<32} {kind:<9} {arrow[:40]:<40} {kept:>10} {total:>10} {kept / max(total, 1):>8.4f}"
            )
        if any(b.edge_kind == "score" for b in self._blocks):
            lines.append("* attention-score edges (query/key to attention output)")
        left = getattr(self, "left_out", None) or {}
        if left:
            lines += ["", f"prunable weights left out of the graph ({len(left)}):"]
            lines += [f"  {name}: {why}" for name, why in left.items()]
        return "\n".join(lines)

    # -- conversions (implemented in graphprune.convert; lazy imports) --------------------------------------------
    def to_networkx(self, **kwargs):
        """See :func:`graphprune.convert.to_networkx`."""
        from .convert import to_networkx

        return to_networkx(self, **kwargs)

    def to_pyg(self, **kwargs):
        """See :func:`graphprune.convert.to_pyg`."""
        from .convert import to_pyg

        return to_pyg(self, **kwargs)

    def to_graph_tool(self, **kwargs):
        """See :func:`graphprune.convert.to_graph_tool`."""
        from .convert import to_graph_tool

        return to_graph_tool(self, **kwargs)

    def to_scipy(self, **kwargs):
        """See :func:`graphprune.convert.to_scipy`."""
        from .convert import to_scipy

        return to_scipy(self, **kwargs)

    def edges_frame(self, **kwargs):
        """See :func:`graphprune.convert.edges_frame`."""
        from .convert import edges_frame

        return edges_frame(self, **kwargs)

    def nodes_frame(self, **kwargs):
        """See :func:`graphprune.convert.nodes_frame`."""
        from .convert import nodes_frame

        return nodes_frame(self, **kwargs)
