"""Masks -> model through ``torch.nn.utils.prune``, and masks to and from files.

Masks are keyed by parameter name (``"features.0.weight"``) and hold bool tensors of the parameter's shape, so
writing them back is exact. Every mask is checked against the model before anything is written: a mask that does
not fit raises :class:`~graphprune.errors.MaskError` and the model is left as it was.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn
from torch.nn.utils import prune

from .errors import MaskError, ParameterError

__all__ = ["apply_masks", "make_permanent", "save_masks", "load_masks"]

_FORMAT = "graphprune-masks"
_VERSION = 1


def _holders(model: nn.Module, name: str):
    """Every ``(module, attribute)`` that holds parameter ``name`` (several for tied weights)."""
    path, _, attr = name.rpartition(".")
    try:
        owner = model.get_submodule(path) if path else model
    except AttributeError:
        return []
    if hasattr(owner, attr + "_orig"):  # already pruned: the parameter is <attr>_orig
        target = getattr(owner, attr + "_orig")
    else:
        target = owner._parameters.get(attr)
    if target is None:
        return []
    out = []
    for mod in model.modules():
        for a, p in list(mod._parameters.items()):
            if p is target:
                out.append((mod, a[: -len("_orig")] if a.endswith("_orig") else a))
    return list(dict.fromkeys(out))


def _check(model, masks, what="Mask"):
    if not isinstance(model, nn.Module):
        raise ParameterError(f"The 'model' parameter must be a torch.nn.Module. Got {type(model).__name__}.")
    if not isinstance(masks, Mapping):
        raise MaskError(
            f"The '{what.lower()}s' parameter must be a dict of parameter name -> tensor. Got {type(masks).__name__}."
        )
    plan = []
    for name, m in masks.items():
        holders = _holders(model, name)
        if not holders:
            raise MaskError(
                f"{what} for {name!r}: the model has no such parameter. Masks must be keyed by parameter names as in "
                "model.named_parameters() (e.g. 'features.0.weight')."
            )
        mod, attr = holders[0]
        current = getattr(mod, attr + "_orig", None)
        current = current if current is not None else getattr(mod, attr)
        if not isinstance(m, torch.Tensor):
            raise MaskError(f"{what} for {name!r} must be a torch.Tensor. Got {type(m).__name__}.")
        if tuple(m.shape) != tuple(current.shape):
            raise MaskError(
                f"{what} for {name!r} has shape {tuple(m.shape)}, but the parameter has shape "
                f"{tuple(current.shape)}."
            )
        if what == "Mask" and m.dtype != torch.bool:
            raise MaskError(f"Mask for {name!r} must have dtype torch.bool. Got {m.dtype}.")
        if what == "Scale" and not bool(torch.isfinite(m).all()):
            raise MaskError(f"Scale for {name!r} must be finite.")
        plan.append((holders, m.to(current.device)))
    return plan


def apply_masks(model: nn.Module, graph=None, masks: Mapping | None = None, *,
                scales: Mapping | None = None) -> nn.Module:
    """Write masks into ``model`` with ``torch.nn.utils.prune.custom_from_mask``.

    Parameters
    ----------
    model : torch.nn.Module
        Modified in place (a ``weight_orig`` parameter and a ``weight_mask`` buffer per masked weight, as with any
        ``torch.nn.utils.prune`` method); returned for chaining.
    graph : MultipartiteGraph, optional
        When ``masks`` is None, the graph's own masks are applied.
    masks : mapping of str to torch.Tensor, optional
        Bool masks keyed by parameter name. An already pruned parameter gets the intersection (torch's
        ``PruningContainer`` semantics: masks only shrink). A tied parameter is masked in every module using it.
    scales : mapping of str to torch.Tensor, optional
        Factors multiplied into the kept weights first (a reweighting sparsifier's ``scales_``, e.g.
        ``SpectralSparsifier(reweight=True)``); same keys and shapes as the masks.

    Raises
    ------
    MaskError
        A mask names no parameter of the model, or has the wrong shape or dtype. Nothing is written.

    Notes
    -----
    Between forward passes the masked ``weight`` attribute is kept detached (a forward hook), so
    ``copy.deepcopy(model)`` works; inside a forward pass it carries gradients to ``weight_orig`` as usual.

    Examples
    --------
    >>> import torch, graphprune
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3))
    >>> mask = {"0.weight": torch.tensor([[True, False, True, True]] * 3)}
    >>> _ = graphprune.apply_masks(net, masks=mask)
    >>> int((net[0].weight == 0).sum())
    3
    """
    if masks is None:
        if graph is None:
            raise ParameterError("apply_masks needs 'masks' or a 'graph' whose masks to apply.")
        masks = graph.masks
    plan = _check(model, masks)
    sc_plan = _check(model, scales, "Scale") if scales is not None else []
    with torch.no_grad():  # every check passed: now write
        for holders, s in sc_plan:
            mod, attr = holders[0]
            target = getattr(mod, attr + "_orig", None)
            target = target if target is not None else getattr(mod, attr)
            target.mul_(s.to(target.dtype))
    for holders, m in plan:
        for mod, attr in holders:
            prune.custom_from_mask(mod, attr, m)
            if not any(isinstance(h, _DetachPrunedWeight) and h.name == attr for h in mod._forward_hooks.values()):
                mod.register_forward_hook(_DetachPrunedWeight(attr))
            _DetachPrunedWeight(attr)(mod, None, None)
    return model


class _DetachPrunedWeight:
    """Forward hook storing the masked weight attribute detached between forward passes.

    ``torch.nn.utils.prune`` keeps ``orig * mask`` (a non-leaf tensor) as a plain attribute, which makes
    ``copy.deepcopy`` of a pruned model fail (pytorch/pytorch#103001 discusses the same error for weight_norm).
    The forward pass has already used the attached tensor, so autograd is unaffected; the pre-hook recomputes it
    at the next call.
    """

    def __init__(self, name: str):
        self.name = name

    def __call__(self, module, inputs, output):
        t = getattr(module, self.name, None)
        if isinstance(t, torch.Tensor) and t.grad_fn is not None:
            setattr(module, self.name, t.detach())


def make_permanent(model: nn.Module) -> nn.Module:
    """Fold every ``torch.nn.utils.prune`` re-parametrisation into plain zeroed weights (``prune.remove``)."""
    for mod in model.modules():
        for hook in list(mod._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                prune.remove(mod, hook._tensor_name)
        for key, hook in list(mod._forward_hooks.items()):
            if isinstance(hook, _DetachPrunedWeight):
                del mod._forward_hooks[key]
    return model


def save_masks(masks: Mapping, path: str | os.PathLike) -> None:
    """Save masks to ``path``; the file loads with ``torch.load(weights_only=True)``."""
    if not isinstance(masks, Mapping) or not all(isinstance(v, torch.Tensor) for v in masks.values()):
        raise MaskError("The 'masks' parameter of save_masks must be a dict of parameter name -> bool tensor.")
    payload = {"format": _FORMAT, "version": _VERSION,
               "masks": {str(k): v.detach().to("cpu", torch.bool) for k, v in masks.items()}}
    torch.save(payload, path)


def load_masks(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load masks written by :func:`save_masks` (``torch.load(weights_only=True)``; a plain dict also loads)."""
    try:
        data = torch.load(path, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise MaskError(f"No mask file at {str(path)!r}.") from None
    except Exception as exc:
        raise MaskError(f"{str(path)!r} is not a mask file readable with weights_only=True: {exc}") from exc
    if isinstance(data, dict) and data.get("format") == _FORMAT:
        data = data["masks"]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise MaskError(f"{str(path)!r} does not hold a dict of parameter name -> bool tensor.")
    return {k: v.to(torch.bool) for k, v in data.items()}
