"""Physical shrink: rebuild the layers of a model without the removed nodes.

:func:`shrink` takes node masks (partition -> kept nodes), checks them against the coupled groups of
:func:`~graphprune.structured.node_groups`, and slices every tensor indexed by a removed node: the rows and columns
of weights (Linear, ConvNd including grouped and depthwise, ConvTransposeNd, Embedding, transformers' Conv1D),
biases, normalisation weights and running statistics (BatchNorm, LayerNorm, RMSNorm, and any per-channel tensor the
export saw broadcast against the channels), and attention heads (the head counts of the attention module, and of a
Hugging Face config when every layer keeps the same counts). Everything is computed and checked before the first
tensor is replaced; any error afterwards (and a failing check forward) puts every replaced tensor and attribute
back.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from .._torchprune import canonical
from .._validation import Boolean, InstanceOf, Options, check_graph, check_param
from ..apply import _holders
from ..errors import GraphPruneError, MaskError, ParameterError, ShrinkError
from .groups import node_groups

__all__ = ["shrink", "ShrinkError", "HF_CONFIG_MODES", "node_masks_from_groups", "removed_groups"]

#: Allowed values of ``shrink(hf_config=...)``.
HF_CONFIG_MODES = ("update", "ignore")

_HEADS = ("num_heads", "num_attention_heads", "n_head", "n_heads")
_KV = ("num_key_value_heads", "num_kv_heads", "n_kv_heads")


def node_masks_from_groups(G, groups, remove) -> dict:
    """Node masks (partition -> bool numpy array, True = kept) that remove the groups with ids in ``remove``.

    A removed ``"kv_group"`` takes its query heads with it.
    """
    keep = {p.name: np.ones(p.size, dtype=bool) for p in G.partitions}
    ids = set(int(i) for i in remove)
    for i in list(ids):
        ids.update(groups[i].children)
    for i in ids:
        for part, idx in groups[i].nodes.items():
            keep[part][idx] = False
    return keep


def removed_groups(groups, keep) -> list[int]:
    """Ids of the groups that ``keep`` (partition -> bool array) removes; raises MaskError on a split group."""
    out = []
    for g in groups:
        states = {bool(v) for part, idx in g.nodes.items() for v in np.unique(keep[part][idx])}
        if len(states) > 1:
            where = ", ".join(f"'{p}' nodes {idx[:6].tolist()}{'...' if idx.size > 6 else ''}"
                              for p, idx in list(g.nodes.items())[:3])
            raise MaskError(
                f"The 'node_masks' parameter of shrink keeps some nodes of a coupled {g.kind} group and removes "
                f"others ({where}): the nodes of a group (graphprune.structured.node_groups) go together. Keep or "
                "remove the whole group.")
        if states == {False}:
            out.append(g.id)
    return out


class _Edits:
    """Replacements of module entries (parameters, buffers, attributes), undone in reverse order on error."""

    def __init__(self):
        self.log = []

    def set(self, obj, name, value):
        if isinstance(obj, nn.Module) and (name in obj._parameters or name in obj._buffers or name in obj.__dict__):
            store = obj._parameters if name in obj._parameters else (
                obj._buffers if name in obj._buffers else obj.__dict__)
            self.log.append((store, None, name, store.get(name, _MISSING)))
            store[name] = value
        else:  # a config: its own __setattr__ (attribute maps)
            self.log.append((None, obj, name, getattr(obj, name, _MISSING)))
            setattr(obj, name, value)

    def undo(self):
        for store, obj, name, old in reversed(self.log):
            if store is not None:
                if old is _MISSING:
                    store.pop(name, None)
                else:
                    store[name] = old
            elif old is _MISSING:
                delattr(obj, name)
            else:
                setattr(obj, name, old)
        self.log.clear()


_MISSING = object()


def _take(t, dim, idx):
    return t.detach().index_select(dim, torch.as_tensor(idx, dtype=torch.long, device=t.device)).clone()


def shrink(model: nn.Module, G, node_masks: Mapping, *, example_inputs=None, hf_config: str = "update",
           allow_width: bool = True) -> nn.Module:
    """Remove nodes from ``model``: rebuild its layers smaller, in place.

    Parameters
    ----------
    model : torch.nn.Module
        The model ``G`` was exported from (unchanged since). Modified in place and returned.
    G : MultipartiteGraph
        ``graphprune.from_model(model, ...)``. Stale after the call: export the shrunk model again to prune on.
    node_masks : mapping of str to bool array
        Partition name -> bool array of its size (numpy or torch), True for the nodes kept; partitions left out
        keep every node. The nodes of each coupled group (:func:`~graphprune.structured.node_groups`) must be kept
        or removed together; :func:`node_masks_from_groups` builds masks from group ids.
    example_inputs : tensor, tuple or dict, optional
        Run the shrunk model once on these (a dict as keyword inputs) and undo everything if it fails (a forward
        with a hard-coded size, for instance).
    hf_config : {"update", "ignore"}, default "update"
        For a model with a Hugging Face ``config``: ``"update"`` writes the new head counts, intermediate size and
        hidden size into it so that ``save_pretrained`` / ``from_pretrained`` round-trip, and raises when the
        counts differ between layers (a config holds one value); ``"ignore"`` leaves the config as it is (the
        shrunk model runs, but a saved copy will not load).
    allow_width : bool, default True
        Allow removing ``"width"`` groups (channels a LayerNorm, RMSNorm or softmax mixes with others: the
        transformer hidden width). Their removal changes those normalisations, so the shrunk model no longer
        equals the masked one.

    Returns
    -------
    torch.nn.Module
        ``model``, smaller.

    Raises
    ------
    ParameterError
        A bad argument, or per-layer counts a Hugging Face config cannot hold (with ``hf_config="update"``).
    MaskError
        A node mask of the wrong partition, size or type; a group kept in part; a removed group that is not
        prunable (the message gives the group's reason); a key/value group kept without any of its query heads
        (or removed with some kept); query heads removed unevenly across the key/value groups of one attention
        (the module repeats each key/value head the same number of times).
    ShrinkError
        The model holds ``torch.nn.utils.prune`` reparametrisations, a tensor to slice has an unknown owner or
        layout, or the check forward on ``example_inputs`` fails. The model is left exactly as it was.

    Notes
    -----
    For a removed group that no normalisation mixes, the shrunk model's outputs equal those of the original model
    with the group's nodes masked (their outgoing weights set to zero), to float tolerance: every tensor the
    removed nodes index is removed, nothing else changes. Cost: one pass over the weights (copies of the kept
    slices).

    Examples
    --------
    >>> import torch, graphprune
    >>> from graphprune.structured import node_groups, node_masks_from_groups, shrink
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    >>> G = graphprune.from_model(net, torch.randn(1, 4))
    >>> groups = node_groups(G)
    >>> first = next(g.id for g in groups if g.prunable)
    >>> shrink(net, G, node_masks_from_groups(G, groups, [first]))[0]
    Linear(in_features=4, out_features=2, bias=True)
    """
    owner = "shrink"
    check_param("model", model, [InstanceOf(nn.Module, "a torch.nn.Module")], owner)
    check_graph(G, owner)
    check_param("hf_config", hf_config, [Options(HF_CONFIG_MODES)], owner)
    check_param("allow_width", allow_width, [Boolean()], owner)
    if getattr(G, "channel_uses", None) is None:
        raise ParameterError("The 'G' parameter of shrink has no record of what acts on its channels (norms, "
                             "biases): it was not made by graphprune.from_model. Export the model with from_model.")
    pruned = [n for n, _ in model.named_parameters() if canonical(n) != n]
    if pruned:
        raise ShrinkError(f"The model holds torch.nn.utils.prune reparametrisations ('{pruned[0]}'): call "
                          "graphprune.make_permanent(model) before shrinking it.")
    keep = _check_masks(G, node_masks)
    groups = node_groups(G)
    removed = _check_removal(G, groups, keep, allow_width)
    if not removed:
        return model
    plan = _plan(model, G, groups, keep, removed)
    config_edits = _config_plan(model, plan, hf_config)
    edits = _Edits()
    try:
        for obj, name, value in plan["sets"] + config_edits:
            edits.set(obj, name, value)
        if example_inputs is not None:
            _check_forward(model, example_inputs)
    except Exception as exc:
        edits.undo()
        if isinstance(exc, GraphPruneError):
            raise
        raise ShrinkError(f"Shrinking failed and was undone: {type(exc).__name__}: {exc}") from exc
    return model


def _check_forward(model, inputs):
    flags = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            if isinstance(inputs, Mapping):
                model(**inputs)
            elif isinstance(inputs, (tuple, list)):
                model(*inputs)
            else:
                model(inputs)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ShrinkError(
            f"The shrunk model fails on example_inputs ({type(exc).__name__}: {first}); the model was left as it "
            "was. A forward that hard-codes a size (a view to a fixed channel count) cannot run smaller; make the "
            "size follow the tensor (view(B, -1)) or keep the group.") from exc
    finally:
        for m, t in flags.items():
            m.training = t


def _check_masks(G, node_masks):
    if not isinstance(node_masks, Mapping):
        raise MaskError("The 'node_masks' parameter of shrink must be a dict of partition name -> bool array. Got "
                        f"{type(node_masks).__name__} instead.")
    keep = {p.name: np.ones(p.size, dtype=bool) for p in G.partitions}
    for name, m in node_masks.items():
        if name not in keep:
            raise MaskError(f"The 'node_masks' parameter of shrink has an entry for {name!r}, which is not a "
                            f"partition of G. Partitions: {list(keep)[:12]}...")
        arr = m.detach().cpu().numpy() if isinstance(m, torch.Tensor) else np.asarray(m)
        if arr.dtype != bool or arr.shape != keep[name].shape:
            raise MaskError(f"The node mask of partition {name!r} passed to shrink must be a bool array of shape "
                            f"{keep[name].shape}. Got {arr.dtype} of shape {arr.shape} instead.")
        keep[name] = arr.copy()
    return keep


def _check_removal(G, groups, keep, allow_width):
    removed = set(removed_groups(groups, keep))
    for i in sorted(removed):
        g = groups[i]
        if not g.prunable:
            raise MaskError(f"The 'node_masks' parameter of shrink removes a group that cannot be removed "
                            f"({g!r}): {g.reason}.")
        if g.mixed and not allow_width:
            raise MaskError(f"The 'node_masks' parameter of shrink removes a {g.kind} group ({g!r}) whose channels "
                            f"{g.mixed[0]} mixes with others; pass allow_width=True to remove it.")
    by_attn = {}
    for g in groups:
        if g.kind == "kv_group":
            kids = [c in removed for c in g.children]
            if g.id in removed and not all(kids):
                raise MaskError(f"The 'node_masks' parameter of shrink removes key/value group {g.id} of attention "
                                f"'{g.layer}' but keeps some of its query heads {g.children}.")
            if g.id not in removed and all(kids):
                raise MaskError(f"The 'node_masks' parameter of shrink removes every query head of key/value group "
                                f"{g.id} of attention '{g.layer}' ({g.children}) but keeps the group: remove it "
                                "too.")
            if g.id not in removed:
                by_attn.setdefault(g.layer, []).append(sum(not k for k in kids))
    for layer, counts in by_attn.items():
        if len(set(counts)) > 1:
            raise MaskError(f"The 'node_masks' parameter of shrink keeps {counts} query heads in the key/value "
                            f"groups of attention '{layer}': the module repeats every key/value head the same "
                            "number of times, so each kept group must keep as many query heads.")
    return removed


def _index(keep, part):
    return np.flatnonzero(keep[part])


def _plan(model, G, groups, keep, removed):
    """Every replacement to make, computed without touching the model."""
    slices = {}  # tensor qualified name -> {dim: kept index}
    extra = {}  # module path -> attribute updates

    def want(name, dim, idx, why):
        cur = slices.setdefault(name, {})
        if dim in cur and not np.array_equal(cur[dim], idx):
            raise ShrinkError(f"'{name}' would be sliced two different ways along dim {dim} ({why}); its uses "
                              "disagree on which elements stay.")
        cur[dim] = idx

    for b in G.weight_blocks:
        src, dst = _index(keep, b.src), _index(keep, b.dst)
        full_src, full_dst = src.size == b.n_src, dst.size == b.n_dst
        if full_src and full_dst:
            continue
        if b.param_slice is not None:
            raise ShrinkError(f"Block '{b.name}' is rows {b.param_slice} of '{b.param}', which shrink cannot slice.")
        grid = b.grid
        kept = {"src": (src, b.n_src), "dst": (dst, b.n_dst)}
        lead, n_lead = kept[grid.storage_side(0)]
        want(b.param, 0, lead, b.name)
        if grid.groups == 1:
            want(b.param, 1, kept[grid.storage_side(1)][0], b.name)
        else:  # dim 1 is per group: whole groups go, the module's groups shrink
            extra.setdefault(b.param, {})["groups"] = int(lead.size // (n_lead // grid.groups))
    # biases of the layers whose rows go
    for b in G.weight_blocks:
        path, _, attr = b.param.rpartition(".")
        if attr != "weight" or b.param not in slices:
            continue
        mod = model.get_submodule(path) if path else model
        bias = getattr(mod, "bias", None)
        if not isinstance(bias, torch.Tensor):
            continue
        name = f"{path}.bias" if path else "bias"
        if b.grid.storage_side(0) == "dst":  # (out, in) storage: linear, conv
            out = slices[b.param].get(0)
        elif not b.grid.kernel:  # (in, out): embedding layout, transformers' Conv1D
            out = slices[b.param].get(1)
        else:  # conv_transpose: dim 1 is per group
            out = _index(keep, b.dst) if b.dst in keep else None
        if out is not None and out.size != bias.shape[0]:
            want(name, 0, out, f"bias of {b.name}")
    # tensors the export saw broadcast against the channels (norm weights, functional biases, buffers)
    modules = {}
    for u in G.channel_uses:
        k = keep[u.part]
        if k.all():
            continue
        if u.kind == "module":
            modules.setdefault(u.name, (u, np.flatnonzero(k)))
            continue
        if u.kind != "param" or u.index is None:
            continue
        needed = u.index[k]
        if (u.index < 0).all():
            continue
        new = np.unique(needed[needed >= 0])
        size = _tensor(model, u.name).shape[u.dim]
        if new.size != size:
            if not np.array_equal(needed, new):
                raise ShrinkError(f"'{u.name}' is read by the channels of '{u.part}' in an order shrink cannot "
                                  f"follow ({u.where}).")
            want(u.name, u.dim, new, u.where)
    for path, (u, idx) in modules.items():
        mod = model.get_submodule(path)
        if isinstance(mod, nn.GroupNorm):
            raise ShrinkError(f"{u.where}: GroupNorm normalises groups of channels; shrink cannot remove channels "
                              "from it.")
        for attr in ("weight", "bias", "running_mean", "running_var"):
            t = getattr(mod, attr, None)
            if isinstance(t, torch.Tensor) and t.dim() >= 1 and t.shape[0] == u.index.size > 1:
                want(f"{path}.{attr}", 0, idx, u.where)
    # attention heads
    heads = {}
    for g in groups:
        if g.kind == "head":
            kept = heads.setdefault(g.layer, [0, 0, [], set()])
            kept[0] += g.id not in removed
            kept[1] += 1
            kept[3].update(p for p in g.nodes if p != g.layer)
        elif g.kind == "kv_group":
            heads.setdefault(g.layer, [0, 0, [], set()])[2].append(g.id not in removed)
    attn, counts = {}, {}
    for O, (h_kept, h_all, kv, parts) in heads.items():
        counts[O] = (h_kept, sum(kv) if kv else h_kept)
        if h_kept == h_all:
            continue
        qblocks = [b for b in G.weight_blocks if b.dst in parts]
        if not qblocks:
            raise ShrinkError(f"Attention '{O}': no weight produces its query heads; shrink cannot find its module.")
        paths = [b.param.rpartition(".")[0].split(".") for b in qblocks]  # the projections' common parent
        common = []
        for level in zip(*paths):
            if len(set(level)) > 1:
                break
            common.append(level[0])
        if len(common) == min(len(p) for p in paths):
            common = common[:-1]
        path = ".".join(common)
        _per_head_tensors(model, path, h_all, slices, O)
        attn[path] = (h_kept, sum(kv) if kv else h_kept, O)
    sets = []
    owners = {}
    for name, dims in slices.items():
        t = _tensor(model, name)
        new = t.detach()
        for dim, idx in sorted(dims.items()):
            if idx.size != new.shape[dim]:
                new = _take(new, dim, idx)
        if new is t:
            continue
        holders = _holders(model, name) or _buffer_holders(model, name)
        if not holders:
            raise ShrinkError(f"Cannot find the module holding '{name}'.")
        for mod, attr in holders:
            value = nn.Parameter(new, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else new
            sets.append((mod, attr, value))
            owners[id(mod)] = mod
    shapes = {}
    for mod, attr, value in sets:
        shapes.setdefault(id(mod), {})[attr] = tuple(value.shape)
    for param, upd in extra.items():
        path = param.rpartition(".")[0]
        mod = model.get_submodule(path)
        owners[id(mod)] = mod
        shapes.setdefault(id(mod), {}).update({"@" + k: v for k, v in upd.items()})
    for key, mod in owners.items():
        sets += _attributes(mod, shapes[key])
    for path, (h, kv, _) in attn.items():
        mod = model.get_submodule(path)
        for attr in _HEADS:
            if isinstance(getattr(mod, attr, None), int):
                sets.append((mod, attr, h))
        for attr in _KV:
            if isinstance(getattr(mod, attr, None), int):
                sets.append((mod, attr, kv))
        if isinstance(getattr(mod, "num_key_value_groups", None), int):
            sets.append((mod, "num_key_value_groups", h // kv))
        hd = next((getattr(mod, a) for a in ("head_dim", "attention_head_size", "key_value_proj_dim", "head_size")
                   if isinstance(getattr(mod, a, None), int)), None)
        for attr in ("split_size", "all_head_size", "inner_dim"):
            if isinstance(getattr(mod, attr, None), int) and isinstance(hd, int):
                sets.append((mod, attr, h * hd))
    return {"sets": sets, "slices": slices, "attn": attn, "counts": counts}


def _per_head_tensors(model, path, heads, slices, O):
    """Refuse when the attention module holds a tensor with a dim of the head count that nothing slices (a
    relative-position bias table indexed inside the forward): the export did not follow it, and removing heads
    without it would broadcast the old heads back in."""
    mod = model.get_submodule(path) if path else model
    for name, t in list(mod.named_parameters(recurse=False)) + list(mod.named_buffers(recurse=False)):
        full = f"{path}.{name}" if path else name
        if t.dim() >= 1 and heads in tuple(t.shape) and full not in slices and heads > 1:
            raise ShrinkError(
                f"Attention '{O}' (module '{path}', {type(mod).__name__}) holds '{name}' of shape {tuple(t.shape)}, "
                f"which has a dim of its head count ({heads}) that the export did not follow (it is indexed inside "
                "the forward): removing heads could leave it per old head. Keep its heads (select_nodes with "
                "kinds=('neuron', 'channel')).")


def _tensor(model, name):
    path, _, attr = name.rpartition(".")
    mod = model.get_submodule(path) if path else model
    t = getattr(mod, attr, None)
    if not isinstance(t, torch.Tensor):
        raise ShrinkError(f"'{name}' is not a tensor of the model.")
    return t


def _buffer_holders(model, name):
    path, _, attr = name.rpartition(".")
    mod = model.get_submodule(path) if path else model
    return [(mod, attr)] if attr in mod._buffers else []


def _attributes(mod, shapes):
    """The size attributes of a module whose tensors change shape."""
    w = shapes.get("weight")
    out = []
    if isinstance(mod, nn.Linear) and w:
        out += [(mod, "out_features", w[0]), (mod, "in_features", w[1])]
    elif isinstance(mod, nn.modules.conv._ConvNd):
        groups = shapes.get("@groups", mod.groups)
        w = w or tuple(mod.weight.shape)
        if mod.transposed:
            out += [(mod, "in_channels", w[0]), (mod, "out_channels", w[1] * groups)]
        else:
            out += [(mod, "out_channels", w[0]), (mod, "in_channels", w[1] * groups)]
        out.append((mod, "groups", groups))
    elif isinstance(mod, nn.Embedding) and w:
        out += [(mod, "num_embeddings", w[0]), (mod, "embedding_dim", w[1])]
    elif isinstance(mod, nn.modules.batchnorm._NormBase):
        n = (w or shapes.get("running_mean") or (mod.num_features,))[0]
        out.append((mod, "num_features", n))
    elif isinstance(mod, (nn.LayerNorm,) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())) and w:
        out.append((mod, "normalized_shape", tuple(w)))
    elif type(mod).__name__ == "Conv1D" and w:  # transformers' (in, out) Linear
        out.append((mod, "nf", w[1]))
    return out


def _config_plan(model, plan, mode):
    """Updates of a Hugging Face config so that save_pretrained / from_pretrained round-trip."""
    config = getattr(model, "config", None)
    if mode == "ignore" or config is None or not hasattr(config, "to_dict"):
        return []
    cfg = config
    edits = []
    attn = plan["attn"]
    if attn:
        hs = {h for h, _ in plan["counts"].values()}
        kvs = {kv for _, kv in plan["counts"].values()}
        if len(hs) > 1 or len(kvs) > 1:
            raise ParameterError(
                "The 'hf_config' parameter of shrink is 'update', but the attentions keep different numbers of heads "
                f"({sorted(hs)} query, {sorted(kvs)} key/value over {len(plan['counts'])} attentions); a Hugging "
                "Face config holds one count. Remove as many heads in every layer (allocation='uniform'), or pass "
                "hf_config='ignore' (the model runs, but save_pretrained / from_pretrained will not round-trip).")
        explicit = [k for k in ("head_dim", "d_kv") if isinstance(getattr(cfg, k, None), int)]
        if not explicit:
            raise ParameterError(
                f"The 'hf_config' parameter of shrink is 'update', but {type(cfg).__name__} has no head_dim: the "
                "model derives it from the hidden size and the head count, so a config with fewer heads would "
                "load heads of another size. Keep the heads (select_nodes with kinds=('neuron', 'channel')), or "
                "pass hf_config='ignore' (the model runs, but save_pretrained / from_pretrained will not "
                "round-trip).")
        for attr in ("num_attention_heads", "n_head", "num_heads"):
            if hasattr(cfg, attr):
                edits.append((cfg, attr, next(iter(hs))))
                break
        if getattr(cfg, "num_key_value_heads", None) is not None:
            edits.append((cfg, "num_key_value_heads", next(iter(kvs))))
    # the hidden width: an embedding's width; intermediate sizes: a Linear outside the attentions
    old = {}
    for key in ("intermediate_size", "n_inner", "ffn_dim", "d_ff", "hidden_size", "n_embd", "d_model"):
        v = getattr(cfg, key, None)
        if isinstance(v, int):
            old[key] = v
    new = {k: set() for k in old}
    changed = {k: False for k in old}
    hidden = ("hidden_size", "n_embd", "d_model")
    after = {(id(mod), attr): value for mod, attr, value in plan["sets"]}
    for path, mod in model.named_modules():  # every layer of the config's size: its size after the shrink
        if isinstance(mod, nn.Embedding):
            attr, keys = "embedding_dim", hidden
        elif isinstance(mod, nn.Linear) and not any(path == a or path.startswith(a + ".") for a in attn):
            attr, keys = "out_features", tuple(k for k in old if k not in hidden)
        else:
            continue
        before = getattr(mod, attr)
        value = after.get((id(mod), attr), before)
        for key in keys:
            if old.get(key) == before:
                new[key].add(value)
                changed[key] |= value != before
    for key, vals in new.items():
        if not changed[key]:
            continue
        if len(vals) > 1:
            raise ParameterError(
                f"The 'hf_config' parameter of shrink is 'update', but the layers keep different sizes for the "
                f"config's '{key}' ({sorted(vals)}); a Hugging Face config holds one. Remove as many nodes in every "
                "layer (allocation='uniform'), or pass hf_config='ignore'.")
        if key in hidden and not isinstance(getattr(cfg, "head_dim", None), int) and \
                isinstance(getattr(cfg, "num_attention_heads", None), int):
            raise ParameterError(
                f"The 'hf_config' parameter of shrink is 'update', but {type(cfg).__name__} has no head_dim: the model "
                "derives it from the hidden size, so a config with a smaller hidden size would load heads of another "
                "size. Pass hf_config='ignore' (the model runs, but save_pretrained / from_pretrained will not "
                "round-trip).")
        edits.append((cfg, key, vals.pop()))
    return edits

