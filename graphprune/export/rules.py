"""Op rules: how a functional or ATen operation on traced tensors becomes partitions and blocks.

A rule is ``fn(ctx, args, kwargs, shape) -> value``: ``ctx`` is an :class:`OpContext` (the builder, the traced
node, its module path and a block name), ``args``/``kwargs`` are the op's arguments where traced tensors are
:class:`~graphprune.export._builder.Val` (a tensor whose nodes are the channels of one partition), ``Scores``
(attention scores), ``Stat`` (a statistic reduced over channels), ``ParamRef`` (a parameter) or plain Python values;
``shape`` is the traced output shape (a tuple, or a tuple of tuples for ops returning several tensors). The rule
returns the output's value (a ``Val``, a tuple of them, or None for an output that carries no features).

Rules are looked up by op name: the function's ``__name__`` (``linear`` for ``F.linear``), the method name
(``view``) or the ATen op name without overload (``aten.addmm.default`` -> ``addmm``). ATen ops tagged pointwise
use the elementwise rule. An op touching a traced tensor with no rule raises
:class:`~graphprune.errors.UnsupportedOperationError`; register one with :func:`register_op_rule`.

Encodings
---------
- Elementwise ops of tensors on the same partition keep it; of several partitions (a residual add, SwiGLU's
  ``act(gate) * up``) they meet in a ``"merge"`` partition fed by identity edges ``i -> i`` from each operand.
- Normalisation statistics (RMSNorm's mean of squares, a vector norm over channels) are ``Stat`` values: they
  rescale their tensor, which keeps its nodes (norm weights are not edges).
- A Linear applied along a non-channel dim (MLP-Mixer's token mixing) is a weight block between two ``"token"``
  partitions; every channel feeds every input token and every output token feeds every output channel
  (identity edges), and output channel ``c`` also gets an identity edge from input channel ``c``.
- A view that merges positions into the channel dim (Swin's patch merging, space-to-channel) is a partition of
  the merged size fed by one identity edge per output node, from the input channel it copies.
- Attention scores keep their score edges through elementwise ops and through a reshape that only splits or merges
  their leading (batch, window, head) dims, the query and key dims unchanged (Swin's shifted-window mask).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import numpy as np
import torch
import torch.fx
from torch.fx.node import map_aggregate

from ..errors import ParameterError, UnsupportedOperationError
from ._builder import Builder, ParamRef, Scores, Stat, Val

__all__ = ["OpContext", "OP_RULES", "register_op_rule", "find_op_rule", "op_name"]

#: op name -> rule
OP_RULES: dict[str, callable] = {}


@dataclass
class OpContext:
    """What a rule knows about the op: the builder, the traced node, its module path and a unique block name."""

    builder: Builder
    node: torch.fx.Node
    path: str
    op: str

    @property
    def name(self) -> str:
        """A name for the partitions and blocks the op creates: the module path for layer ops, else the node."""
        return self.node.name

    @property
    def label(self) -> str:
        return self.path or self.node.name

    @property
    def where(self) -> str:
        """``module 'h.0.attn' (node 'matmul_1')``, for messages."""
        return f"module '{self.path}' (node '{self.node.name}')" if self.path else f"node '{self.node.name}'"


def register_op_rule(*names, replace: bool = True):
    """Decorator registering an op rule for the op ``names`` (see the module docstring for the contract).

    Parameters
    ----------
    *names : str
        Op names: ``"linear"``, ``"view"``, ``"addmm"``...
    replace : bool, default True
        Replace an existing rule of that name (False raises instead).

    Examples
    --------
    >>> import graphprune
    >>> from graphprune.export import register_op_rule, OP_RULES
    >>> @register_op_rule("my_gelu_variant")
    ... def _my_gelu(ctx, args, kwargs, shape):
    ...     return OP_RULES["gelu"](ctx, args, kwargs, shape)  # elementwise: same nodes
    >>> "my_gelu_variant" in OP_RULES
    True
    >>> del OP_RULES["my_gelu_variant"]
    """
    for n in names:
        if not isinstance(n, str) or not n:
            raise ParameterError(f"The 'names' parameter of register_op_rule must be op names (str). Got {n!r}.")

    def deco(fn):
        if not callable(fn):
            raise ParameterError(f"register_op_rule decorates a function. Got {type(fn).__name__} instead.")
        for n in names:
            if n in OP_RULES and not replace:
                raise ParameterError(f"An op rule for {n!r} exists; pass replace=True to override it.")
            OP_RULES[n] = fn
        return fn

    return deco


def op_name(node: torch.fx.Node) -> str:
    t = node.target
    if isinstance(t, str):
        return t
    if hasattr(t, "overloadpacket"):  # an ATen OpOverload (torch.export graphs): aten.linear.default -> "linear"
        return t.overloadpacket.__name__
    return getattr(t, "__name__", str(t))


def find_op_rule(node: torch.fx.Node):
    name = op_name(node)
    rule = OP_RULES.get(name)
    if rule is None and name.endswith("_") and not name.startswith("_"):
        rule = OP_RULES.get(name[:-1])  # in-place variant: relu_ -> relu
    if rule is None and hasattr(node.target, "tags") and torch.Tag.pointwise in node.target.tags:
        rule = OP_RULES["add"]
    return rule


# -- helpers ---------------------------------------------------------------------------------------------------
def vals(obj) -> list:
    out = []
    map_aggregate(obj, lambda a: out.append(a) if isinstance(a, Val) else None)
    return out


def traced(obj) -> list:
    """Every Val, Scores or Stat in ``obj``."""
    out = []
    map_aggregate(obj, lambda a: out.append(a) if isinstance(a, (Val, Scores, Stat)) else None)
    return out


def arg(args, kwargs, i, key, default=None):
    if key in kwargs:
        return kwargs[key]
    return args[i] if len(args) > i else default


def is_shape(shape) -> bool:
    return isinstance(shape, tuple) and all(isinstance(s, int) for s in shape)


def is_shapes(shape) -> bool:
    return isinstance(shape, tuple) and bool(shape) and all(is_shape(s) for s in shape)


def _dims(d, rank):
    if d is None:
        return set(range(rank))
    d = d if isinstance(d, (tuple, list)) else (d,)
    return {int(x) % rank for x in d}


def _placed(v) -> bool:
    return isinstance(v, Val) and v.part is not None


# -- elementwise -------------------------------------------------------------------------------------------------
_POINTWISE = (
    "add", "sub", "mul", "div", "truediv", "floordiv", "mod", "pow", "neg", "abs", "relu", "relu6", "gelu",
    "silu", "sigmoid", "tanh", "hardswish", "hardsigmoid", "hardtanh", "leaky_relu", "elu", "selu", "celu",
    "softplus", "mish", "exp", "log", "sqrt", "rsqrt", "erf", "clamp", "clamp_min", "clamp_max", "clip", "where",
    "masked_fill", "dropout", "alpha_dropout", "feature_alpha_dropout", "dropout1d", "dropout2d", "dropout3d",
    "softmax", "log_softmax", "_softmax", "to", "type", "float", "half", "bfloat16", "double", "contiguous",
    "clone", "detach", "_to_copy", "type_as", "sign", "reciprocal", "maximum", "minimum", "eq", "ne", "lt", "gt",
    "le", "ge", "logical_not", "bitwise_not", "iadd", "imul", "isub", "itruediv", "lerp", "square", "sin", "cos",
    "addcmul", "addcdiv", "lift_fresh_copy", "alias", "layer_norm", "group_norm", "batch_norm", "instance_norm",
    "rms_norm", "prelu", "gelu_", "native_dropout", "native_layer_norm", "native_group_norm",
    "_native_batch_norm_legit_no_training", "_native_batch_norm_legit", "native_batch_norm", "copy", "copy_",
    "fill", "sigmoid_", "erfinv", "floor", "ceil", "round", "trunc",
    "logical_and", "logical_or", "bitwise_and", "bitwise_or", "nan_to_num", "softsign", "tanhshrink", "logsigmoid",
    "threshold", "rrelu", "hardshrink", "softshrink", "silu_", "mul_", "add_", "div_", "sub_", "requires_grad_",
    "cpu", "cuda", "long", "int", "bool", "_assert_tensor_metadata", "dropout_", "stochastic_depth",
    "drop_path", "drop_block_2d", "drop_block_fast_2d", "glu", "softmin", "hardsigmoid_", "relu6_", "elu_",
)


@register_op_rule(*_POINTWISE)
def elementwise(ctx, args, kwargs, shape):
    """Elementwise ops: one traced tensor keeps its nodes; several partitions meet in a merge partition."""
    b = ctx.builder
    vs = vals(args) + vals(kwargs)
    stats = [a for a in traced(args) + traced(kwargs) if isinstance(a, Stat)]
    scores = [a for a in traced(args) + traced(kwargs) if isinstance(a, Scores)]
    if scores:
        return _on_scores(ctx, scores, vs, shape)
    placed = [v for v in vs if v.part is not None]
    if is_shapes(shape) and (len(vs) == 1 or len(placed) == 1):  # batch norm -> (out, mean, var); dropout
        x = placed[0] if placed else vs[0]
        return tuple(_follow(b, ctx.name, x, s) if i == 0 else None for i, s in enumerate(shape))
    if not is_shape(shape):
        return None
    if not vs:
        return Stat(shape) if stats else None
    return _generic(b, ctx.name, vs, shape)


def _follow(b, name, x, shape):
    if tuple(shape) == tuple(x.shape):
        return x
    return b.reshape(name, x, shape)


def _on_scores(ctx, scores, vs, shape):
    """Scale, mask, softmax, dropout or a bias added to attention scores: still the same scores."""
    s = scores[0]
    if not is_shape(shape) or tuple(shape) != tuple(s.shape) or len(scores) > 1:
        raise UnsupportedOperationError(
            f"Op '{ctx.op}' at {ctx.where} turns attention scores of shape {s.shape} into {shape}; only "
            "elementwise ops keep them (scale, mask, softmax, dropout, an added bias).")
    extra = tuple(v for v in vs if _placed(v))
    if extra:
        return Scores(s.q, s.k, s.shape, s.q_dim, s.k_dim, s.bias + extra)
    return s


def _generic(b, name, vs, shape):
    """Shape-driven rule: one tensor input follows its channel dim; several are merged (residual add)."""
    placed = [v for v in vs if v.part is not None]
    if not placed:
        return Val(None, -1, shape, raw=vs[0].raw)
    if len(placed) < len(vs):
        # raw inputs that broadcast (rotary cos/sin, a mask) modulate the traced tensor; a raw input of the output's
        # shape (x + input) joins it as an input partition
        vs = [v for v in vs if v.part is not None or (tuple(v.shape) == tuple(shape) and
                                                      v.raw not in b.buffer_names)]
    if len(vs) == 1 or len({v.part for v in vs}) == 1:
        # one partition: several views of it (q * cos + rotate_half(q) * sin) keep the first one's layout; the
        # rotation mixes channels within a head, which the attention scores then connect all to all
        return b.reshape(name, vs[0], shape)
    return b.merge(name, vs, shape)


# -- layers ------------------------------------------------------------------------------------------------------
@register_op_rule("embedding")
def embedding(ctx, args, kwargs, shape):
    """``F.embedding(ids, weight)`` or ATen ``embedding(weight, ids)``: one input node per vocabulary entry.

    Ids computed inside the model (position ids from ``arange``) get an input partition of their own."""
    b = ctx.builder
    if isinstance(arg(args, kwargs, 0, "weight"), ParamRef):
        w, ids = args[0], arg(args, kwargs, 1, "indices")
    else:
        ids, w = args[0] if args else None, arg(args, kwargs, 1, "weight")
    if not isinstance(w, ParamRef) or not is_shape(shape):
        return _no_param(ctx, args, kwargs, shape)
    name, W = b.param_from_ref(w)
    if isinstance(ids, Val) and ids.part is not None:
        raise UnsupportedOperationError(
            f"Embedding at {ctx.where} is indexed by a layer output (shape {ids.shape}); ids must come from the "
            "inputs.")
    if isinstance(ids, Val):
        v = b.materialize(ids, -1, kind="token", size=W.shape[0])
    else:
        part = b.new_partition(f"{ctx.label}.ids", W.shape[0], kind="token", role="input")
        v = Val(part, -1, (W.shape[0],))
    out = b.new_partition(ctx.label, W.shape[1])
    b.weight_block(ctx.label, v.part, out, name, W, "embedding")
    return Val(out, len(shape) - 1, shape)


def _raw_result(raw, shape):
    """An op on raw (unplaced) inputs only: its output stays raw, following the first input, or is dropped."""
    return Val(None, -1, shape, raw=raw[0].raw) if raw and is_shape(shape) else None


def _no_param(ctx, args, kwargs, shape):
    """A layer op whose weight is not a parameter (computed, or a raw input): follow it elementwise if cheap."""
    if not any(_placed(v) for v in vals(args) + vals(kwargs)):
        return _raw_result(vals(args), shape)
    raise UnsupportedOperationError(
        f"Op '{ctx.op}' at {ctx.where} applies a weight that is not a parameter of the model; the exporter can "
        "only turn parameters into edges.")


@register_op_rule("linear")
def linear_rule(ctx, args, kwargs, shape):
    from .adapters import linear

    x, w = (args[0] if args else kwargs.get("input")), arg(args, kwargs, 1, "weight")
    if not isinstance(w, ParamRef):
        return _no_param(ctx, args, kwargs, shape)
    if not isinstance(x, Val):
        raise UnsupportedOperationError(f"Linear at {ctx.where} receives no traced input.")
    name, W = ctx.builder.param_from_ref(w)
    return linear(ctx.builder, ctx.label, name, W, x, shape)


_CONVS = {"conv1d": 1, "conv2d": 2, "conv3d": 3}


@register_op_rule("conv1d", "conv2d", "conv3d", "convolution", "conv_transpose1d", "conv_transpose2d",
                  "conv_transpose3d")
def conv_rule(ctx, args, kwargs, shape):
    from .adapters import conv

    x, w = args[0] if args else kwargs.get("input"), arg(args, kwargs, 1, "weight")
    if not isinstance(w, ParamRef):
        return _no_param(ctx, args, kwargs, shape)
    if ctx.op == "convolution":  # ATen: (input, weight, bias, stride, padding, dilation, transposed, out_pad, groups)
        transposed, groups = bool(arg(args, kwargs, 6, "transposed", False)), int(arg(args, kwargs, 8, "groups", 1))
    elif ctx.op.startswith("conv_transpose"):
        transposed, groups = True, int(arg(args, kwargs, 6, "groups", 1))
    else:
        transposed, groups = False, int(arg(args, kwargs, 6, "groups", 1))
    if not isinstance(x, Val):
        raise UnsupportedOperationError(f"Convolution at {ctx.where} receives no traced input.")
    name, W = ctx.builder.param_from_ref(w)
    return conv(ctx.builder, ctx.label, name, W, groups, x, shape, transposed=transposed)


@register_op_rule("addmm")
def addmm(ctx, args, kwargs, shape):
    """``addmm(bias, x, W)`` with ``W`` of shape (in, out): transformers' Conv1D (GPT-2), layout ``embedding``."""
    x, w = arg(args, kwargs, 1, "mat1"), arg(args, kwargs, 2, "mat2")
    if isinstance(w, ParamRef) and isinstance(x, Val):
        return _x_at_w(ctx, x, w, shape)
    return matmul(ctx, args[1:], {}, shape)


def _x_at_w(ctx, x, w, shape):
    """``x @ W`` with a (in, out) parameter: an ``embedding``-layout block (edge (i, o) is ``W[i, o]``)."""
    b = ctx.builder
    name, W = b.param_from_ref(w)
    if W.dim() != 2:
        raise UnsupportedOperationError(f"Op '{ctx.op}' at {ctx.where} multiplies by a {W.dim()}-d parameter.")
    if x.part is not None and x.grid is None and x.cdim % len(x.shape) != len(x.shape) - 1:
        from .adapters import token_mixing

        return token_mixing(b, ctx.label, name, W, x, shape, "embedding")
    if x.grid is not None:
        raise UnsupportedOperationError(
            f"Op '{ctx.op}' at {ctx.where} multiplies a tensor whose channels are split over several dims by a "
            "weight; reshape it back first.")
    x = b.materialize(x, -1)
    out = b.new_partition(ctx.label, W.shape[1])
    b.weight_block(ctx.label, x.part, out, name, W, "embedding")
    return Val(out, len(shape) - 1, shape)


@register_op_rule("matmul", "mm", "bmm", "matmul_", "__matmul__")
def matmul(ctx, args, kwargs, shape):
    a0, a1 = (tuple(args) + (None, None))[:2]
    b = ctx.builder
    if isinstance(a0, Val) and isinstance(a1, Val) and a0.grid is not None and a1.grid is not None:
        return Scores(a0, a1, shape)  # q @ k^T
    if isinstance(a0, Scores) and isinstance(a1, Val):  # softmax(q k^T) @ v
        return b.attention(ctx.name, a0.q, a0.k, a1, a0.q_dim, a0.k_dim, shape, a0.bias)
    if isinstance(a1, ParamRef) and isinstance(a0, Val):
        return _x_at_w(ctx, a0, a1, shape)
    if not any(_placed(v) or isinstance(v, (Scores, Stat)) for v in (a0, a1)):
        return _raw_result(vals((a0, a1)), shape)
    raise UnsupportedOperationError(
        f"Op '{ctx.op}' at {ctx.where} multiplies {_desc(a0)} by {_desc(a1)}; supported: a tensor times a "
        "parameter, and attention (q @ k^T on head-split tensors, then the scores times v).")


@register_op_rule("baddbmm")
def baddbmm(ctx, args, kwargs, shape):
    out = matmul(ctx, args[1:3], {}, shape)
    bias = args[0] if args else None
    if isinstance(out, Scores) and _placed(bias):
        return Scores(out.q, out.k, out.shape, out.q_dim, out.k_dim, out.bias + (bias,))
    return out


def _desc(v):
    if isinstance(v, Val):
        return f"a tensor of shape {v.shape}" + (" (input)" if v.part is None else "")
    if isinstance(v, Scores):
        return "attention scores"
    if isinstance(v, ParamRef):
        return f"parameter '{v.name}'"
    return type(v).__name__


@register_op_rule("einsum")
def einsum(ctx, args, kwargs, shape):
    """Attention written with einsum (maxvit): ``q, k -> scores`` contracting the head size, then ``scores, v``."""
    eq = args[0] if args else kwargs.get("equation")
    ops = list(args[1:])
    if len(ops) == 1 and isinstance(ops[0], (tuple, list)):
        ops = list(ops[0])
    if not isinstance(eq, str) or len(ops) != 2:
        return _unsupported(ctx, args, kwargs, shape)
    spec = eq.replace(" ", "")
    lhs, out = spec.split("->") if "->" in spec else (spec, None)
    la, lb = lhs.split(",")
    a, b2 = ops
    if isinstance(a, Val) and isinstance(b2, Val) and a.grid is not None and b2.grid is not None and out:
        contracted = [c for c in la if c in lb and c not in out]
        if len(contracted) == 1:
            c = contracted[0]
            return Scores(a, b2, shape, la.index(c) - len(la), lb.index(c) - len(lb))
    if isinstance(a, Scores) and isinstance(b2, Val) and out and out[-1] == lb[-1]:
        return ctx.builder.attention(ctx.name, a.q, a.k, b2, a.q_dim, a.k_dim, shape, a.bias)
    return _unsupported(ctx, args, kwargs, shape)


@register_op_rule("scaled_dot_product_attention", "_scaled_dot_product_flash_attention_for_cpu",
                  "_scaled_dot_product_efficient_attention", "_scaled_dot_product_flash_attention")
def sdpa(ctx, args, kwargs, shape):
    q, k, v = (list(args) + [kwargs.get("query"), kwargs.get("key"), kwargs.get("value")])[:3]
    mask = arg(args, kwargs, 3, "attn_mask")
    bias = (mask,) if _placed(mask) else ()
    out_shape = shape[0] if is_shapes(shape) else shape
    res = ctx.builder.attention(ctx.name, q, k, v, -1, -1, out_shape, bias)
    if is_shapes(shape):
        return (res,) + (None,) * (len(shape) - 1)
    return res


# -- reductions and statistics --------------------------------------------------------------------------------------
_REDUCE_DIM_POS = {"linalg_vector_norm": 2, "norm": 2, "std": 1, "var": 1}


@register_op_rule("mean", "sum", "amax", "amin", "max", "min", "std", "var", "norm", "linalg_vector_norm",
                  "logsumexp", "prod", "nansum", "nanmean", "var_mean", "std_mean")
def reduction(ctx, args, kwargs, shape):
    """A reduction over non-channel dims keeps the nodes; over the channel dim it gives a ``Stat``."""
    x = args[0] if args else kwargs.get("input")
    if not isinstance(x, Val) or x.part is None:
        if len(vals(args)) > 1:  # binary max/min
            return elementwise(ctx, args, kwargs, shape)
        return elementwise(ctx, args, kwargs, shape) if isinstance(x, Val) else (
            Stat(shape) if isinstance(x, Stat) and is_shape(shape) else None)
    if len(vals(args)) > 1:  # torch.max(a, b): elementwise
        return elementwise(ctx, args, kwargs, shape)
    pos = _REDUCE_DIM_POS.get(ctx.op, 1)
    dim = arg(args, kwargs, pos, "dim", None)
    if isinstance(dim, (Val, Stat)) or (dim is not None and not isinstance(dim, (int, tuple, list))):
        dim = None
    rank = len(x.shape)
    reduced = _dims(dim, rank)
    chan = set(x.gdims) if x.grid is not None else {x.cdim % rank}
    first = shape[0] if is_shapes(shape) else shape
    if reduced & chan:
        from .uses import reduce_use

        ctx.builder.uses.append(reduce_use(x.part, x, reduced, ctx.op, ctx.where, ctx.builder.parts[x.part]["size"]))
        res = Stat(first)
    else:
        res = ctx.builder.reshape(ctx.name, x, first) if tuple(first) != tuple(x.shape) else x
    if is_shapes(shape):  # max(dim) -> (values, indices)
        return (res,) + (None,) * (len(shape) - 1)
    return res


@register_op_rule("argmax", "argmin", "new_zeros", "new_ones", "new_empty", "new_full", "zeros_like", "ones_like",
                  "empty_like", "full_like", "rand_like", "randn_like", "size", "dim", "numel", "sym_size",
                  "sym_numel", "_local_scalar_dense", "item", "tolist", "nonzero", "all", "any", "isnan",
                  "isinf", "isfinite", "argsort")
def no_features(ctx, args, kwargs, shape):
    """Ops whose output carries no feature of their input (new tensors, indices, sizes)."""
    return None


# -- structure: indexing, slicing, splitting, concatenation, permutation ---------------------------------------------
@register_op_rule("getitem")
def getitem(ctx, args, kwargs, shape):
    x, index = args[0], args[1]
    if isinstance(x, (tuple, list)):
        return x[index]
    if isinstance(x, Scores):
        return _on_scores(ctx, [x], [], shape)
    if isinstance(x, Stat):
        return Stat(shape) if is_shape(shape) else None
    if not isinstance(x, Val) or not is_shape(shape):
        return None
    if x.part is None:
        return Val(None, -1, shape, raw=x.raw)
    idx = index if isinstance(index, tuple) else (index,)
    if x.grid is not None and all(isinstance(i, (int, slice)) or i is Ellipsis for i in idx):
        return _index_grid(ctx, x, idx, shape)
    if x.grid is None:
        sel = _channel_index(x, index, shape)
        if sel is not None:
            return ctx.builder.select(ctx.name, x, sel[0], shape, sel[1])
    if any(isinstance(i, Val) for i in idx) or any(isinstance(i, (list, torch.Tensor)) for i in idx):
        return _advanced(ctx, x, [i if not isinstance(i, slice) or i != slice(None) else None for i in idx], shape)
    return ctx.builder.reshape(ctx.name, x, shape)


def _index_grid(ctx, x, idx, shape):
    """Basic indexing of a head-split tensor (``q, k, v = qkv[0], qkv[1], qkv[2]``): slices, then picks."""
    rank = len(x.shape)
    if Ellipsis in idx:
        k = idx.index(Ellipsis)
        idx = idx[:k] + (slice(None),) * (rank - len(idx) + 1) + idx[k + 1 :]
    idx = tuple(idx) + (slice(None),) * (rank - len(idx))
    cur = x
    for d, i in enumerate(idx):  # slices keep dims: apply them first
        if isinstance(i, slice) and i != slice(None):
            sub = list(cur.shape)
            sub[d] = len(range(*i.indices(cur.shape[d])))
            cur = _slice_grid(ctx, cur, d, i, tuple(sub))
    for d in sorted((d for d, i in enumerate(idx) if isinstance(i, int)), reverse=True):  # then picks, last first
        sub = tuple(n for j, n in enumerate(cur.shape) if j != d)
        cur = _select_split(ctx.builder, ctx.name, cur, d, idx[d], sub)
    if tuple(cur.shape) != tuple(shape):
        raise UnsupportedOperationError(f"Indexing at {ctx.where} of {x.shape} gives {cur.shape}, not {shape}.")
    return cur


def _advanced(ctx, x, indices, shape):
    """Advanced indexing with index tensors on non-channel dims (CLIP's ``hidden[arange, eos]``)."""
    rank = len(x.shape)
    chan = set(x.gdims) if x.grid is not None else {x.cdim % rank}
    used = {d for d, i in enumerate(indices) if i is not None and i is not Ellipsis}
    if used & chan or Ellipsis in indices:
        raise UnsupportedOperationError(
            f"Op '{ctx.op}' at {ctx.where} indexes the channel dim of shape {x.shape} with a tensor; the exporter "
            "follows index tensors on other dims only.")
    if x.grid is not None:
        raise UnsupportedOperationError(f"Op '{ctx.op}' at {ctx.where} indexes a head-split tensor with tensors.")
    return ctx.builder.reshape(ctx.name, x, shape)


@register_op_rule("index", "_unsafe_index")
def index(ctx, args, kwargs, shape):
    x, indices = args[0], list(arg(args, kwargs, 1, "indices", []))
    if not _placed(x) or not is_shape(shape):
        return Val(None, -1, shape, raw=x.raw) if isinstance(x, Val) and is_shape(shape) else None
    return _advanced(ctx, x, indices, shape)


@register_op_rule("index_select", "gather", "take_along_dim")
def index_select(ctx, args, kwargs, shape):
    x, dim = args[0], arg(args, kwargs, 1, "dim", 0)
    if not _placed(x) or not is_shape(shape):
        return Val(None, -1, shape, raw=x.raw) if isinstance(x, Val) and is_shape(shape) else None
    rank = len(x.shape)
    chan = set(x.gdims) if x.grid is not None else {x.cdim % rank}
    if int(dim) % rank in chan:
        raise UnsupportedOperationError(
            f"Op '{ctx.op}' at {ctx.where} picks channels by a traced index; the exporter cannot tell which.")
    return ctx.builder.reshape(ctx.name, x, shape)


@register_op_rule("slice")
def slice_rule(ctx, args, kwargs, shape):
    """ATen ``slice(x, dim, start, end, step)``: a slice of the channel dim is a new partition."""
    x = args[0]
    if not _placed(x) or not is_shape(shape):
        return getitem(ctx, (x, ()), {}, shape) if isinstance(x, (Stat, Scores)) else (
            Val(None, -1, shape, raw=x.raw) if isinstance(x, Val) and is_shape(shape) else None)
    dim = arg(args, kwargs, 1, "dim", 0) % len(x.shape)
    start, end, step = (arg(args, kwargs, i, k, d) for i, k, d in ((2, "start", None), (3, "end", None),
                                                                   (4, "step", 1)))
    sl = slice(start, end, step)
    if x.grid is not None:
        return _slice_grid(ctx, x, dim, sl, shape)
    if dim == x.cdim % len(x.shape):
        chans = np.arange(x.shape[dim])[sl]
        return ctx.builder.select(ctx.name, x, chans, shape, dim)
    return ctx.builder.reshape(ctx.name, x, shape)


def _slice_grid(ctx, x, dim, sl, shape):
    if dim not in x.gdims:
        return Val(x.part, x.cdim, shape, grid=x.grid, gdims=x.gdims)
    ax = x.gdims.index(dim)
    keep = np.arange(x.grid.shape[ax])[sl]
    return Val(x.part, x.cdim, shape, grid=np.take(x.grid, keep, axis=ax), gdims=x.gdims)


@register_op_rule("narrow")
def narrow(ctx, args, kwargs, shape):
    """``narrow(x, dim, start, length)``: a slice."""
    x, dim = args[0], arg(args, kwargs, 1, "dim", 0)
    start, length = arg(args, kwargs, 2, "start", 0), arg(args, kwargs, 3, "length", 0)
    return slice_rule(ctx, (x, dim, start, start + length, 1), {}, shape)


@register_op_rule("roll", "flip")
def roll_flip(ctx, args, kwargs, shape):
    """``roll`` / ``flip`` move positions (Swin's cyclic shift); along the channel dim they reorder channels."""
    x = args[0] if args else kwargs.get("input")
    if not _placed(x) or not is_shape(shape):
        return view(ctx, args, kwargs, shape)
    rank = len(x.shape)
    if ctx.op == "flip":
        dims = _dims(arg(args, kwargs, 1, "dims", ()), rank)
    else:
        dims = arg(args, kwargs, 2, "dims", None)
        dims = None if dims is None or dims == [] else _dims(dims, rank)
    chan = set(x.gdims) if x.grid is not None else {x.cdim % rank}
    if dims is not None and not dims & chan:
        return x
    if x.grid is not None or dims is None:
        raise UnsupportedOperationError(
            f"Op '{ctx.op}' at {ctx.where} moves elements across the channel dim of {x.shape}.")
    C = x.shape[x.cdim % rank]
    if ctx.op == "flip":
        order = np.arange(C)[::-1]
    else:
        shifts = arg(args, kwargs, 1, "shifts", 0)
        dl = list(arg(args, kwargs, 2, "dims", ())) if isinstance(arg(args, kwargs, 2, "dims", ()), (list, tuple)) \
            else [arg(args, kwargs, 2, "dims")]
        sh = list(shifts) if isinstance(shifts, (list, tuple)) else [shifts]
        k = sum(s for d, s in zip(dl, sh) if d % rank == x.cdim % rank)
        order = np.roll(np.arange(C), k)
    return ctx.builder.select(ctx.name, x, order, shape, x.cdim % rank)


@register_op_rule("select")
def select_rule(ctx, args, kwargs, shape):
    x = args[0]
    if not _placed(x) or not is_shape(shape):
        return Val(None, -1, shape, raw=x.raw) if isinstance(x, Val) and is_shape(shape) else (
            Stat(shape) if isinstance(x, Stat) else None)
    dim, i = arg(args, kwargs, 1, "dim", 0), arg(args, kwargs, 2, "index", 0)
    if x.grid is not None:
        return _select_split(ctx.builder, ctx.name, x, dim, i, shape)
    rank = len(x.shape)
    if dim % rank == x.cdim % rank:
        raise UnsupportedOperationError(
            f"Op 'select' at {ctx.where} picks one channel of shape {x.shape}; slice it (x[..., i:i+1]) instead.")
    return ctx.builder.reshape(ctx.name, x, shape)


def _select_split(b, name, x, dim, index, shape):
    """``x.select(dim, index)`` on a head-split tensor: picking along a split dim keeps a subset of channels."""
    dim = dim % len(x.shape)
    shift = lambda d: d - (d > dim)  # noqa: E731
    if dim not in x.gdims:
        gdims = tuple(shift(d) for d in x.gdims)
        return Val(x.part, min(gdims), shape, grid=x.grid, gdims=gdims)
    ax = x.gdims.index(dim)
    sub = np.take(x.grid, index, axis=ax)
    gdims = tuple(shift(d) for i, d in enumerate(x.gdims) if i != ax)
    if sub.ndim == 1:
        return b.select(name, Val(x.part, gdims[0], x.shape), sub, shape, gdims[0])
    return Val(x.part, min(gdims), shape, grid=sub, gdims=gdims)


@register_op_rule("unbind")
def unbind(ctx, args, kwargs, shape):
    """``unbind`` (timm's packed ``q, k, v = qkv.unbind(0)``): one ``select`` per piece."""
    x, dim = args[0], arg(args, kwargs, 1, "dim", 0)
    if not is_shapes(shape):
        return None
    if not _placed(x):
        return tuple(Val(None, -1, s, raw=x.raw) if isinstance(x, Val) else None for s in shape)
    return tuple(select_rule(ctx, (x, dim, i), {}, s) for i, s in enumerate(shape))


@register_op_rule("split", "chunk", "tensor_split", "split_with_sizes", "unsafe_split", "unsafe_chunk")
def split(ctx, args, kwargs, shape):
    """split / chunk / tensor_split: along the channel dim each piece is a slice partition."""
    x = args[0]
    if not is_shapes(shape):
        return None
    if not _placed(x):
        return tuple(Val(None, -1, s, raw=x.raw) if isinstance(x, Val) else None for s in shape)
    dim = arg(args, kwargs, 2 if len(args) > 2 or "dim" in kwargs else 99, "dim", 0)
    rank = len(x.shape)
    dim = dim % rank
    out, start = [], 0
    for i, s in enumerate(shape):
        n = s[dim]
        sl = slice(start, start + n)
        start += n
        if x.grid is not None:
            out.append(_slice_grid(ctx, x, dim, sl, s))
        elif dim == x.cdim % rank:
            out.append(ctx.builder.select(f"{ctx.name}.{i}", x, np.arange(sl.start, sl.stop), s, dim))
        else:
            out.append(Val(x.part, x.cdim, s))
    return tuple(out)


@register_op_rule("cat", "concat", "concatenate", "stack")
def cat(ctx, args, kwargs, shape):
    seq = args[0] if args else kwargs.get("tensors")
    dim = arg(args, kwargs, 1, "dim", 0)
    tensors = [v for v in (seq or []) if isinstance(v, Val)]
    if not tensors or not is_shape(shape):
        return Stat(shape) if any(isinstance(v, Stat) for v in seq or []) and is_shape(shape) else None
    b = ctx.builder
    if ctx.op == "stack":  # a new dim: like a cat of unsqueezed tensors along a non-channel dim
        d = dim % len(shape)
        tensors = [b.reshape(ctx.name, v, tuple(v.shape[:d]) + (1,) + tuple(v.shape[d:])) for v in tensors]
        return _generic(b, ctx.name, tensors, shape)
    grids = [v for v in tensors if v.grid is not None]
    if grids:
        return _cat_grid(ctx, tensors, dim % len(shape), shape)
    placed = [v for v in tensors if v.part is not None]
    if not placed:
        return Val(None, -1, shape, raw=tensors[0].raw)
    return b.cat(ctx.name, tensors, dim, shape)


def _cat_grid(ctx, tensors, dim, shape):
    """Concatenation of views of one head-split partition (rotary ``rotate_half``): the grids concatenate."""
    ref = tensors[0]
    if not all(v.grid is not None and v.part == ref.part and v.gdims == ref.gdims for v in tensors):
        raise UnsupportedOperationError(
            f"Op '{ctx.op}' at {ctx.where} concatenates head-split tensors of different layers; merge the heads "
            "back (a reshape) first.")
    if dim not in ref.gdims:
        return Val(ref.part, ref.cdim, shape, grid=ref.grid, gdims=ref.gdims)
    ax = ref.gdims.index(dim)
    return Val(ref.part, ref.cdim, shape, grid=np.concatenate([v.grid for v in tensors], axis=ax), gdims=ref.gdims)


_PERMUTES = ("permute", "transpose", "t", "swapaxes", "swapdims", "movedim", "numpy_T", "moveaxis")


@register_op_rule(*_PERMUTES)
def permute(ctx, args, kwargs, shape):
    x = args[0]
    if isinstance(x, Scores):
        raise UnsupportedOperationError(f"Op '{ctx.op}' at {ctx.where} permutes attention scores.")
    if not _placed(x) or not is_shape(shape):
        return Val(None, -1, shape, raw=x.raw) if isinstance(x, Val) and is_shape(shape) else (
            Stat(shape) if isinstance(x, Stat) else None)
    perm = _perm_list(ctx.op, len(x.shape), args[1:], kwargs)
    c = x.cdim % len(x.shape)
    if x.grid is None:
        return Val(x.part, perm.index(c), shape)
    gdims = tuple(perm.index(d) for d in x.gdims)
    return Val(x.part, min(gdims), shape, grid=x.grid, gdims=gdims)


def _perm_list(fname, rank, rest, kwargs):
    """Output dim i takes input dim perm[i], for permute / transpose / t / swapaxes / movedim."""
    if fname == "permute":
        dims = rest[0] if len(rest) == 1 and isinstance(rest[0], (tuple, list)) else rest
        return [d % rank for d in (dims or kwargs.get("dims"))]
    perm = list(range(rank))
    if fname == "t":
        return perm[::-1] if rank == 2 else perm
    if fname in ("movedim", "moveaxis"):
        src, dst = rest[0] % rank, rest[1] % rank
        perm.remove(src)
        perm.insert(dst, src)
        return perm
    d0 = (rest[0] if rest else kwargs.get("dim0")) % rank
    d1 = (rest[1] if len(rest) > 1 else kwargs.get("dim1")) % rank
    perm[d0], perm[d1] = perm[d1], perm[d0]
    return perm


_VIEWS = ("view", "reshape", "_unsafe_view", "flatten", "unflatten", "squeeze", "unsqueeze", "view_as",
          "reshape_as", "expand", "expand_as", "broadcast_to", "repeat", "tile", "pad", "constant_pad_nd",
          "avg_pool1d", "avg_pool2d", "avg_pool3d", "max_pool1d", "max_pool2d", "max_pool3d", "adaptive_avg_pool1d",
          "adaptive_avg_pool2d", "adaptive_avg_pool3d", "adaptive_max_pool1d", "adaptive_max_pool2d",
          "adaptive_max_pool3d", "max_pool2d_with_indices", "max_pool3d_with_indices", "_adaptive_avg_pool2d",
          "lp_pool2d", "interpolate", "upsample", "upsample_nearest1d", "upsample_nearest2d", "upsample_linear1d",
          "upsample_bilinear2d", "upsample_bicubic2d", "_upsample_bilinear2d_aa", "replication_pad2d",
          "reflection_pad2d", "triu", "tril", "detach_")


#: reshapes that keep every element in place (no copy of an element, no reorder): on attention scores they may
#: split or merge the leading (batch, window, head) dims
_RESHAPES = ("view", "reshape", "_unsafe_view", "flatten", "unflatten", "squeeze", "unsqueeze", "view_as",
             "reshape_as")


def _rebatch_scores(s, shape):
    """``s`` under a new ``shape`` when only its leading dims are split or merged: the last two dims (query and key
    positions) and the number of elements unchanged. Swin's shifted windows view the scores ``(B * nW, heads, N, N)``
    as ``(B, nW, heads, N, N)`` to add the window mask, then back: each score keeps its query and key, so its score
    edges stay those of ``s``. None for any other shape."""
    if not is_shape(shape) or len(shape) < 2 or len(s.shape) < 2:
        return None
    if tuple(shape[-2:]) != tuple(s.shape[-2:]) or int(np.prod(shape)) != int(np.prod(s.shape)):
        return None
    return Scores(s.q, s.k, tuple(shape), s.q_dim, s.k_dim, s.bias)


@register_op_rule(*_VIEWS)
def view(ctx, args, kwargs, shape):
    """Views, pooling, padding, rolls and resizes: the shape rules of the builder find the channel dim. On attention
    scores, a reshape that only splits or merges their leading dims keeps them (:func:`_rebatch_scores`)."""
    x = args[0] if args else kwargs.get("input")
    if isinstance(x, Scores):
        if ctx.op in _RESHAPES:
            kept = _rebatch_scores(x, shape)
            if kept is not None:
                return kept
        return _on_scores(ctx, [x], [], shape)
    if is_shapes(shape) and isinstance(x, Val):  # max_pool with indices -> (out, indices)
        return tuple(ctx.builder.reshape(ctx.name, x, s) if i == 0 and x.part is not None else None
                     for i, s in enumerate(shape))
    if not is_shape(shape):
        return None
    if isinstance(x, Stat):
        return Stat(shape)
    if not isinstance(x, Val):
        return None
    if x.grid is not None and ctx.op in ("expand", "expand_as", "broadcast_to"):
        return _expand_grid(x, shape)
    return ctx.builder.reshape(ctx.name, x, shape)


def _expand_grid(x, shape):
    """``expand`` of a head-split tensor along new size-1 dims (``repeat_kv`` of grouped-query attention)."""
    grid, gdims = x.grid, tuple(x.gdims)
    rank = len(shape)
    off = rank - len(x.shape)
    gdims = tuple(d + off for d in gdims)
    for d in range(rank):
        src = x.shape[d - off] if d >= off else 1
        if shape[d] != src and d not in gdims:  # a broadcast dim: the channel index repeats along it
            if src != 1:
                raise UnsupportedOperationError(f"expand of {x.shape} to {shape}")
            grid = np.repeat(grid[..., None], shape[d], axis=-1)
            gdims = gdims + (d,)
    return Val(x.part, min(gdims), shape, grid=grid, gdims=gdims)


def _channel_index(x, index, out_shape):
    """For ``x[index]``: ``(channels, output dim)`` when the index slices the channel dim, else None."""
    index = index if isinstance(index, tuple) else (index,)
    rank = len(x.shape)
    c = x.cdim % rank
    consuming = [i for i in index if i is not Ellipsis and i is not None]
    if any(not isinstance(i, (int, slice)) for i in consuming):
        return None  # advanced indexing: left to the index rules
    if Ellipsis in index:
        k = index.index(Ellipsis)
        index = index[:k] + (slice(None),) * (rank - len(consuming)) + index[k + 1 :]
    index = index + (slice(None),) * (rank - sum(i is not None for i in index))
    in_dim, out_dim = 0, 0
    for i in index:
        if i is None:
            out_dim += 1
            continue
        if in_dim == c:
            if isinstance(i, int):
                raise UnsupportedOperationError(
                    f"Indexing picks channel {i} of a tensor of shape {x.shape}; slice it (x[..., i:i+1]) instead.")
            if not all(v is None or isinstance(v, int) for v in (i.start, i.stop, i.step)):
                return None
            chans = np.arange(x.shape[c])[i]
            if chans.size == x.shape[c]:
                return None
            if out_dim >= len(out_shape) or out_shape[out_dim] != chans.size:
                raise UnsupportedOperationError(
                    f"Cannot resolve the channel slice {i} of shape {x.shape}: the traced output has shape "
                    f"{out_shape}."
                )
            return chans, out_dim
        in_dim += 1
        out_dim += 0 if isinstance(i, int) else 1
    return None


# -- fx builtins --------------------------------------------------------------------------------------------------
OP_RULES["add"] = elementwise
for _op in (operator.add, operator.sub, operator.mul, operator.truediv, operator.neg, operator.pow):
    OP_RULES.setdefault(_op.__name__, elementwise)
OP_RULES.setdefault("matmul", matmul)


def _unsupported(ctx, args, kwargs, shape):
    shapes = [v.shape for v in traced(args) + traced(kwargs) if hasattr(v, "shape")]
    raise UnsupportedOperationError(
        f"Op '{ctx.op}' at {ctx.where} has no export rule (inputs {shapes}, output {shape}). Register one with "
        f"@graphprune.export.register_op_rule({ctx.op!r}) (see graphprune.export.rules for the contract and "
        "examples)."
    )


@register_op_rule("shifted_window_attention")
def shifted_window_attention(ctx, args, kwargs, shape):
    """torchvision's Swin window attention (a function fx does not trace into): the qkv projection, attention per
    head with the relative-position bias (Swin V2's bias is computed by a small MLP, whose output channels, one
    per head, feed their head's outputs through score edges), and the output projection. Window partition, the
    cyclic shift and padding move tokens only."""
    from .adapters import linear

    names = ("input", "qkv_weight", "proj_weight", "relative_position_bias", "window_size", "num_heads")
    x, qkv_w, proj_w, bias, _, heads = (arg(args, kwargs, i, k) for i, k in enumerate(names))
    if not isinstance(x, Val) or not isinstance(qkv_w, ParamRef) or not isinstance(proj_w, ParamRef):
        return _unsupported(ctx, args, kwargs, shape)
    b = ctx.builder
    name, W = b.param_from_ref(qkv_w)
    C = W.shape[1]
    qkv = linear(b, f"{ctx.label}.qkv", name, W, x, tuple(shape[:-1]) + (W.shape[0],))
    hd = C // int(heads)
    parts = []
    for i in range(3):
        grid = (i * C + np.arange(C)).reshape(int(heads), hd)
        parts.append(Val(qkv.part, 1, (1, int(heads), 1, hd), grid=grid, gdims=(1, 3)))
    bias = (bias,) if _placed(bias) else ()
    att = b.attention(f"{ctx.label}.attention", parts[0], parts[1], parts[2], -1, -1, (1, int(heads), 1, hd), bias)
    merged = b.reshape(f"{ctx.label}.heads", att, (1, 1, C))
    name, W = b.param_from_ref(proj_w)
    out = linear(b, f"{ctx.label}.proj", name, W, merged, (1, 1, W.shape[0]))
    return Val(out.part, len(shape) - 1, shape)


@register_op_rule("_patch_merging_pad")
def patch_merging_pad(ctx, args, kwargs, shape):
    """torchvision's Swin patch merging: ``(B, H, W, C) -> (B, H/2, W/2, 4C)``, the concatenation of the four
    2x2 offsets. A space-to-channel merge: output node ``k * C + c`` gets an identity edge from channel ``c``."""
    x = args[0] if args else kwargs.get("x")
    if not _placed(x) or x.grid is not None or x.cdim % len(x.shape) != len(x.shape) - 1:
        return _unsupported(ctx, args, kwargs, shape)
    C = x.shape[-1]
    k = shape[-1] // C
    return ctx.builder.select(ctx.name, x, np.tile(np.arange(C), k), shape, len(shape) - 1)


@register_op_rule("_get_relative_position_bias")
def relative_position_bias(ctx, args, kwargs, shape):
    """torchvision's Swin bias lookup ``table (N, heads) -> (1, heads, T, T)``: a computed table (Swin V2's MLP)
    keeps its channels, now on dim 1; a parameter table is no edge (it is not a prunable weight)."""
    x = args[0] if args else None
    if not _placed(x):
        return None
    if x.grid is not None or x.cdim % len(x.shape) != len(x.shape) - 1 or shape[1] != x.shape[-1]:
        return _unsupported(ctx, args, kwargs, shape)
    return Val(x.part, 1, shape)
