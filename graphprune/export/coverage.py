"""The coverage rule: every prunable weight of the model is an edge of the graph, or it is named and explained.

Prunable weights are the weights of ``nn.Linear``, ``nn.ConvNd``, ``nn.ConvTransposeNd``, ``nn.Embedding``,
``nn.MultiheadAttention``'s projections and transformers' ``Conv1D`` (GPT-2): each parameter counted once (tied
parameters share one mask).
"""

from __future__ import annotations

from torch import nn

from .. import _torchprune

__all__ = ["prunable_weights", "left_out"]

_CONV1D = "transformers.pytorch_utils.Conv1D"


def _is_hf_conv1d(m) -> bool:
    return any(f"{t.__module__}.{t.__qualname__}" == _CONV1D for t in type(m).__mro__)


def prunable_weights(model: nn.Module) -> dict:
    """``{canonical parameter name: numel}`` of the model's prunable weights (each parameter once)."""
    canonical = {}
    for name, p in model.named_parameters():
        key = _torchprune.canonical(name)
        canonical.setdefault(id(p), key)
    out = {}
    for path, m in model.named_modules():
        attrs = ()
        if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd, nn.Embedding)) or _is_hf_conv1d(m):
            attrs = ("weight",)
        elif isinstance(m, nn.MultiheadAttention):
            attrs = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")
        for a in attrs:
            t = _torchprune.original(m, a, None)
            if isinstance(t, nn.Parameter):
                out.setdefault(canonical.get(id(t), f"{path}.{a}" if path else a), int(t.numel()))
    return out


def left_out(model: nn.Module, G, touched: dict, skipped=()) -> dict:
    """``{parameter: reason}`` for each prunable weight that backs no block of ``G``."""
    used = set(G.params)
    skipped = list(skipped)
    out = {}
    for name in prunable_weights(model):
        if name in used:
            continue
        owner = name.rsplit(".", 1)[0] if "." in name else ""
        skip = next((s for s, _ in skipped if owner == s or owner.startswith(s + ".")), None)
        ops = sorted(set().union(*[v for k, v in touched.items() if k == name or k.endswith("." + name)] or [set()]))
        if skip is not None:
            out[name] = f"its module '{skip}' has no adapter and was skipped (skip_unsupported=True)"
        elif ops:
            out[name] = f"used only through op(s) {', '.join(ops)} that give it no edges"
        else:
            out[name] = ("not used by the traced forward pass on the example inputs (a branch not taken in eval "
                         "mode, or an unused module)")
    return out
