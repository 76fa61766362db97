"""Block layouts: how the elements of a weight tensor map to the edges ``(src, dst)`` of a bipartite block.

Every prunable edge is one parameter element, so a block's whole index arithmetic is a function of four things:
the layout name, the weight's shape, the convolution groups and the rows of the parameter the block covers
(``param_slice``). :class:`Grid` owns that arithmetic, and nothing else in graphprune writes it again:

- the rows of a full-parameter tensor that belong to the block (:meth:`Grid.rows`, :meth:`Grid.set_rows`,
  :meth:`Grid.and_rows`, :meth:`Grid.or_rows`) and the global flat index of a block element
  (:meth:`Grid.param_index`);
- the edge of an element (:meth:`Grid.edge_index`), per-node values broadcast to the weight's shape
  (:meth:`Grid.broadcast_nodes`) and per-node sums of a weight-shaped tensor (:meth:`Grid.node_sums`);
- the biadjacency, ``(n_dst, n_src)``, of per-edge values (:meth:`Grid.biadjacency`, :meth:`Grid.pairs`) and
  its inverse, a ``(n_dst, n_src)`` matrix read back in edge (parameter) order (:meth:`Grid.from_biadjacency`).

The four layouts are one rule. The weight is stored ``(a, c, *k)``: dim 0 indexes one side (the *lead* side:
destinations for ``"linear"`` ``(out, in)`` and ``"conv"`` ``(out, in/groups, *k)``, sources for
``"embedding"`` ``(in, out)`` and ``"conv_transpose"`` ``(in, out/groups, *k)``); dim 1 indexes the other side
within the lead node's group, so that node is ``(lead // (a / groups)) * c + column``; the trailing dims are
kernel taps, parallel edges of one channel pair (or, in the ``"rolled"`` view, sources ``channel * prod(k) + tap``).

This module imports nothing of graphprune's but :mod:`graphprune.errors` and the allowed views of
:mod:`graphprune._validation`.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import torch

from ._validation import VIEWS
from .errors import GraphValidationError, ParameterError

__all__ = ["Grid", "LAYOUTS", "check_view", "param_rows"]

#: layout name -> (side indexed by dim 0, whether the trailing dims are kernel taps and dim 1 is per group)
_TABLE = {"linear": ("dst", False), "embedding": ("src", False), "conv": ("dst", True),
          "conv_transpose": ("src", True)}
LAYOUTS = tuple(_TABLE)


def check_view(view):
    """``view`` if it is one of :data:`VIEWS`; ParameterError naming the value otherwise."""
    if view not in VIEWS:
        raise ParameterError(f"The 'view' parameter must be one of {VIEWS}. Got {view!r} instead.")
    return view


def param_rows(full, param_slice):
    """Rows ``param_slice = (start, stop)`` of a full-parameter tensor (a view), or ``full`` itself when
    ``param_slice`` is None: :meth:`Grid.rows` for callers that hold a block's description, not the block."""
    if param_slice is None:
        return full
    return full[param_slice[0] : param_slice[1]]


class Grid:
    """The index arithmetic of one weight block.

    Parameters
    ----------
    layout : {"linear", "embedding", "conv", "conv_transpose"}
        How an element maps to ``(src, dst)``: linear ``(out, in)``; embedding ``(in, out)``;
        conv ``(out, in/groups, *k)``; conv_transpose ``(in, out/groups, *k)``.
    shape : tuple of int
        The block's weight shape (rows ``param_slice`` of the parameter when it is a slice).
    groups : int, default 1
        Convolution groups (ignored by linear and embedding).
    param_slice : tuple of int or None
        ``(start, stop)`` rows of the parameter the block covers; None for the whole parameter.

    Raises
    ------
    GraphValidationError
        Unknown layout.

    Notes
    -----
    A ``Grid`` holds a few integers and never the weight; every method is vectorised (no Python loop over
    edges) and none mutates its arguments except the ``*_rows`` writers, which write into ``full`` in place.

    Examples
    --------
    >>> from graphprune.layout import Grid
    >>> g = Grid("linear", (2, 3))
    >>> src, dst = g.edge_index()
    >>> src.tolist(), dst.tolist()
    ([0, 1, 2, 0, 1, 2], [0, 0, 0, 1, 1, 1])
    """

    __slots__ = ("layout", "shape", "groups", "param_slice", "lead", "kernel", "_edges")

    #: Grids of up to this many edges keep their edge indices once computed (16 bytes per edge).
    EDGE_CACHE_LIMIT = 1 << 16

    def __init__(self, layout: str, shape, groups: int = 1, param_slice=None):
        if layout not in _TABLE:
            raise GraphValidationError(f"Unknown block layout {layout!r}; known layouts: {LAYOUTS}.")
        self.layout = layout
        self.shape = tuple(int(s) for s in shape)
        self.lead, self.kernel = _TABLE[layout]
        self.groups = int(groups) if self.kernel else 1
        self.param_slice = None if param_slice is None else (int(param_slice[0]), int(param_slice[1]))
        self._edges = {}

    def __repr__(self):
        extra = f", groups={self.groups}" if self.groups != 1 else ""
        extra += f", param_slice={self.param_slice}" if self.param_slice is not None else ""
        return f"Grid({self.layout!r}, {self.shape}{extra})"

    # -- sizes ---------------------------------------------------------------------------------------------------
    @property
    def num_edges(self) -> int:
        return int(math.prod(self.shape))

    @property
    def kernel_size(self) -> int:
        """Parallel edges per connected channel pair: ``prod(k)`` for convolutions, else 1."""
        return int(math.prod(self.shape[2:])) if self.kernel else 1

    @property
    def _other(self) -> int:
        """Number of nodes of the side that dim 1 indexes (per group times the groups)."""
        return self.shape[1] * self.groups

    @property
    def n_src(self) -> int:
        return self._other if self.lead == "dst" else self.shape[0]

    @property
    def n_dst(self) -> int:
        return self.shape[0] if self.lead == "dst" else self._other

    def view_shape(self, view: str = "channel") -> tuple[int, int]:
        """``(n_dst, n_src)`` of the biadjacency in ``view``; rolled sources are ``(channel, tap)`` pairs."""
        check_view(view)
        if view == "rolled":
            return self.n_dst, self.n_src * self.kernel_size
        return self.n_dst, self.n_src

    def storage_side(self, dim: int) -> str:
        """``"src"`` or ``"dst"``: the side whose nodes dim ``dim`` (0 or 1) of the weight indexes; with groups,
        dim 1 indexes nodes within the lead node's group."""
        if dim not in (0, 1):
            raise ParameterError(f"The 'dim' parameter must be 0 or 1. Got {dim!r} instead.")
        other = "src" if self.lead == "dst" else "dst"
        return self.lead if dim == 0 else other

    # -- rows of the whole parameter -----------------------------------------------------------------------------
    def rows(self, full):
        """The block's rows of a full-parameter tensor (a view; ``full`` itself when the block is the whole
        parameter)."""
        return param_rows(full, self.param_slice)

    def set_rows(self, full, part):
        """Write ``part`` (shaped like the block's weight) into the block's rows of ``full``, in place; returns
        ``full``."""
        self.rows(full).copy_(part)
        return full

    def and_rows(self, full, part):
        """``full[rows] &= part`` in place (masks only shrink); returns ``full``."""
        view = self.rows(full)
        view &= part
        return full

    def or_rows(self, full, part):
        """``full[rows] |= part`` in place; returns ``full``."""
        view = self.rows(full)
        view |= part
        return full

    def param_index(self, elements=None) -> np.ndarray:
        """Flat index in the whole parameter (C order) of block elements ``elements`` (all by default)."""
        idx = np.arange(self.num_edges, dtype=np.int64) if elements is None else np.asarray(elements, np.int64)
        if self.param_slice is not None:
            idx = idx + self.param_slice[0] * int(math.prod(self.shape[1:]))
        return idx

    # -- edges ---------------------------------------------------------------------------------------------------
    def edge_index(self, view: str = "channel", elements=None) -> tuple[np.ndarray, np.ndarray]:
        """Local ``(src, dst)`` of block elements ``elements`` (flat C-order indices; all by default).

        In the ``"rolled"`` view a convolution's source nodes are ``(input channel, kernel tap)`` pairs numbered
        ``channel * prod(k) + tap``. All edges' arrays are cached per view for grids of at most
        :attr:`EDGE_CACHE_LIMIT` edges (shared: do not modify them).
        """
        check_view(view)
        if elements is None:
            hit = self._edges.get(view)
            if hit is None:
                hit = self._edge_index(view, None)
                if self.num_edges <= self.EDGE_CACHE_LIMIT:
                    self._edges[view] = hit
            return hit
        return self._edge_index(view, elements)

    def _edge_index(self, view, elements):
        flat = np.arange(self.num_edges, dtype=np.int64) if elements is None else np.asarray(elements, np.int64)
        a, c = self.shape[0], self.shape[1]
        if not self.kernel:
            lead, col = flat // c, flat % c
            return (col, lead) if self.lead == "dst" else (lead, col)
        K = self.kernel_size
        tap = flat % K
        lead = flat // (c * K)
        col = (flat // K) % c
        other = (lead // (a // self.groups)) * c + col
        src, dst = (other, lead) if self.lead == "dst" else (lead, other)
        if view == "rolled":
            src = src * K + tap
        return src, dst

    def _grouped(self, xp=np, device=None):
        """``(a, c)`` ids of the dim-1 side's nodes (numpy, or torch on ``device`` with ``xp=torch``)."""
        a, c = self.shape[0], self.shape[1]
        if xp is torch:
            return ((torch.arange(a, device=device) // (a // self.groups)) * c)[:, None] + torch.arange(
                c, device=device)[None, :]
        return (np.arange(a) // (a // self.groups))[:, None] * c + np.arange(c)[None, :]

    def broadcast_nodes(self, src_values, dst_values) -> tuple[np.ndarray, np.ndarray]:
        """Per-node values of the source and destination sides (channel view) as two arrays that broadcast to
        the weight's shape: element ``e`` reads ``src_values[src(e)]`` and ``dst_values[dst(e)]``.

        No per-edge index is built: a linear block's values are a row and a column; a convolution's are
        ``(a, c)`` lookups with singleton kernel dims.
        """
        src_values, dst_values = np.asarray(src_values), np.asarray(dst_values)
        lead_v, other_v = (dst_values, src_values) if self.lead == "dst" else (src_values, dst_values)
        if not self.kernel:
            x, y = lead_v[:, None], other_v[None, :]
        else:
            a, c = self.shape[0], self.shape[1]
            taps = (1,) * (len(self.shape) - 2)
            x, y = lead_v[:, None].reshape((a, 1) + taps), other_v[self._grouped()].reshape((a, c) + taps)
        return (y, x) if self.lead == "dst" else (x, y)

    def fold(self, x: torch.Tensor, dtype=None) -> torch.Tensor:
        """A weight-shaped tensor summed over the kernel taps: ``(a, c)`` (the 2-D weight itself otherwise)."""
        if x.dim() > 2:
            x = x.sum(dim=tuple(range(2, x.dim())), dtype=dtype)
        return x

    def node_sums(self, folded: torch.Tensor, dtype) -> tuple[np.ndarray, np.ndarray]:
        """``(per-source sums, per-destination sums)`` of a folded ``(a, c)`` tensor (:meth:`fold`): a block's
        degrees from its mask, or its strengths from ``|w|``."""
        r0, r1 = folded.sum(1, dtype=dtype).numpy(), folded.sum(0, dtype=dtype).numpy()  # per row / per column
        if self.kernel:
            a, c = folded.shape
            g = self.groups
            r1 = folded.reshape(g, a // g, c).sum(1, dtype=dtype).reshape(-1).numpy()  # per (group, column)
        return (r1, r0) if self.lead == "dst" else (r0, r1)

    def pairs(self, folded: np.ndarray) -> sp.csr_array:
        """A folded ``(a, c)`` array (:meth:`fold`) as the ``(n_dst, n_src)`` ``scipy.sparse.csr_array`` of its
        nonzero channel pairs (float64)."""
        shape = (self.n_dst, self.n_src)
        x = folded
        if not self.kernel:
            if self.lead == "src":
                x = x.T
            rows, cols = np.nonzero(x)
            return sp.csr_array((x[rows, cols].astype(np.float64), (rows, cols)), shape=shape)
        a, c = x.shape
        rows, cols = np.nonzero(x)
        vals = x[rows, cols].astype(np.float64)
        grouped = (rows // (a // self.groups)) * c + cols  # the other side's channel id
        if self.lead == "dst":
            return sp.csr_array((vals, (rows, grouped)), shape=shape)
        return sp.csr_array((vals, (grouped, rows)), shape=shape)

    @property
    def order(self) -> str | None:
        """How the elements lie in parameter order when they form a full ``(dst, src)`` grid with no parallel
        or grouped edges (channel view): ``"dst"`` (``e = dst * n_src + src``: linear, an ungrouped 1x1
        convolution), ``"src"`` (``e = src * n_dst + dst``: embedding), None otherwise. Then the biadjacency is
        a reshape of the per-edge values (``"dst"``) or its transpose (``"src"``)."""
        if self._is_matrix("channel"):
            return "dst"
        if self.lead == "src" and not self.kernel:
            return "src"
        return None

    def _is_matrix(self, view: str) -> bool:
        """True when the weight, reshaped, is the biadjacency itself: (out, in) storage without parallel edges
        (linear, an ungrouped convolution in the rolled view or with a 1x1 kernel)."""
        return self.lead == "dst" and self.groups == 1 and (not self.kernel or view == "rolled"
                                                            or self.kernel_size == 1)

    def biadjacency(self, values, view: str = "channel", *, format: str = "torch", keep=None):
        """Per-edge values (flat, parameter order) as the ``(n_dst, n_src)`` biadjacency of ``view``; parallel
        edges are summed.

        ``format="torch"``: a dense tensor of ``values``' dtype and device (a reshape or a transposed view when
        the weight is the matrix or its transpose, else a scatter-add). ``format="scipy"``: a
        ``scipy.sparse.csr_array`` of the edges flagged by ``keep`` (a bool array, all edges by default).
        """
        shape = self.view_shape(view)
        if format == "torch":
            if self._is_matrix(view):
                return values.reshape(shape)  # a 1x1 convolution's channel view is its rolled view
            if self.lead == "src" and not self.kernel:  # (in, out): the biadjacency is its transpose (a view)
                return values.reshape(shape[1], shape[0]).T
            s, d = self.edge_index(view)
            M = torch.zeros(shape, dtype=values.dtype, device=values.device)
            idx = (torch.as_tensor(d, device=values.device), torch.as_tensor(s, device=values.device))
            return M.index_put_(idx, values, accumulate=True)
        if format != "scipy":
            raise ParameterError(f"The 'format' parameter must be 'scipy' or 'torch'. Got {format!r}.")
        s, d = self.edge_index(view)
        values = np.asarray(values)
        keep = slice(None) if keep is None else keep
        M = sp.csr_array((values[keep], (d[keep], s[keep])), shape=shape)
        M.sum_duplicates()
        return M

    def from_biadjacency(self, R: torch.Tensor, view: str = "channel") -> torch.Tensor:
        """The inverse of :meth:`biadjacency`: the values ``R[dst, src]`` of a ``(n_dst, n_src)`` matrix in edge
        (parameter) order, flat; every kernel tap of a channel pair reads the pair's value in the channel view.

        A reshape, not a gather, when the weight is the matrix itself or its transpose.
        """
        check_view(view)
        if self._is_matrix(view):
            return R.reshape(-1)
        if self.lead == "src" and not self.kernel:
            return R.T.reshape(-1)
        if view == "channel":  # an (a, c) lookup broadcast over the taps
            a, c = self.shape[0], self.shape[1]
            grouped = self._grouped(torch, R.device)
            rows = torch.arange(a, device=R.device)[:, None]
            small = R[rows, grouped] if self.lead == "dst" else R[grouped, rows]
            return small.reshape((a, c) + (1,) * (len(self.shape) - 2)).expand(self.shape).reshape(-1)
        s, d = self.edge_index(view)
        return R[torch.as_tensor(d, device=R.device), torch.as_tensor(s, device=R.device)]

    # -- the matrix a unit multiplies ----------------------------------------------------------------------------
    def dst_matrix(self, t: torch.Tensor):
        """``t`` (weight-shaped) as the matrix whose row ``o`` holds destination ``o``'s incoming elements:
        ``(out, in * prod(k) / groups)`` for (out, in) storage, the transpose for ``"embedding"``; None for a
        ``"conv_transpose"`` (a destination's elements are not one row)."""
        if self.lead == "dst":
            return t if not self.kernel else t.reshape(t.shape[0], -1)
        if not self.kernel:
            return t.T
        return None

    def from_dst_matrix(self, m: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`dst_matrix`: a matrix back in the weight's shape (a new tensor for embedding)."""
        if self.lead == "src" and not self.kernel:
            return m.T.contiguous()
        return m.reshape(self.shape)
