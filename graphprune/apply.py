"""Masks -> model through ``torch.nn.utils.prune``; :func:`save_masks` / :func:`load_masks` re-exported from
:mod:`graphprune.masks`, where mask files are written and read.

Masks are keyed by parameter name (``"features.0.weight"``) and hold bool tensors of the parameter's shape, so
writing them back is exact. Every mask is checked against the model before anything is written: a mask that does
not fit raises :class:`~graphprune.errors.MaskError` and the model is left as it was.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.nn.utils import prune

from ._torchprune import ORIG, canonical, original
from ._validation import InstanceOf, check_mask, check_mask_key, check_param
from .errors import MaskError, ParameterError
from .masks import load_masks, save_masks  # public here too: graphprune.apply.save_masks

__all__ = ["apply_masks", "make_permanent", "save_masks", "load_masks"]


def _holders(model: nn.Module, name: str):
    """Every ``(module, attribute)`` that holds parameter ``name`` (several for tied weights)."""
    path, _, attr = name.rpartition(".")
    try:
        owner = model.get_submodule(path) if path else model
    except AttributeError:
        return []
    if hasattr(owner, attr + ORIG):  # already pruned: the parameter is <attr>_orig
        target = getattr(owner, attr + ORIG)
    else:
        target = owner._parameters.get(attr)
    if target is None:
        return []
    out = []
    for mod in model.modules():
        for a, p in list(mod._parameters.items()):
            if p is target:
                out.append((mod, canonical(a)))
    return list(dict.fromkeys(out))


def _check(model, masks, what="mask", owner="apply_masks"):
    check_param("model", model, [InstanceOf(nn.Module, "a torch.nn.Module")], owner)
    if not isinstance(masks, Mapping):
        raise MaskError(f"The '{what}s' parameter of {owner} must be a dict of parameter name -> tensor. "
                        f"Got {type(masks).__name__} instead.")
    plan = []
    for name, m in masks.items():
        check_mask_key(name, owner)
        holders = _holders(model, name)
        if not holders:
            raise MaskError(
                f"The '{what}s' parameter of {owner} has an entry for {name!r}: the model has no such parameter. "
                "Key it by parameter names as in model.named_parameters() (e.g. 'features.0.weight')."
            )
        mod, attr = holders[0]
        current = original(mod, attr)
        if what == "mask":
            m = check_mask(name, m, current.shape, owner=owner, numeric=True)
        else:
            if not isinstance(m, torch.Tensor) or not m.dtype.is_floating_point:
                raise MaskError(f"The scale for {name!r} passed to {owner} must be a floating torch.Tensor. Got "
                                f"{type(m).__name__ if not isinstance(m, torch.Tensor) else m.dtype} instead.")
            if tuple(m.shape) != tuple(current.shape):
                raise MaskError(f"The scale for {name!r} passed to {owner} has shape {tuple(m.shape)}, but the "
                                f"parameter has shape {tuple(current.shape)}.")
            if not bool(torch.isfinite(m).all()):
                raise MaskError(f"The scale for {name!r} passed to {owner} must be finite (it holds NaN or inf).")
        if current.is_meta:
            raise MaskError(f"Parameter {name!r} is on the meta device: materialise the model before applying masks.")
        plan.append((holders, m.to(current.device)))
    return plan


class _Snapshot:
    """Everything ``custom_from_mask`` and the scales touch on a set of modules, to roll back on any error."""

    _DICTS = ("_parameters", "_buffers", "_forward_pre_hooks", "_forward_hooks", "_forward_pre_hooks_with_kwargs",
              "_forward_hooks_with_kwargs", "_forward_hooks_always_called")

    def __init__(self, modules, attrs, scaled):
        self.state = []
        for mod in dict.fromkeys(modules):
            dicts = {d: dict(getattr(mod, d)) for d in self._DICTS if hasattr(mod, d)}
            plain = {a: mod.__dict__[a] for a in attrs if a in mod.__dict__}
            self.state.append((mod, dicts, plain, [a for a in attrs if a not in mod.__dict__]))
        self.data = [(t, t.detach().clone()) for t in scaled]

    def restore(self):
        with torch.no_grad():
            for t, old in self.data:
                t.copy_(old)
        for mod, dicts, plain, absent in self.state:
            for d, content in dicts.items():
                live = getattr(mod, d)
                live.clear()
                live.update(content)
            for a in absent:
                mod.__dict__.pop(a, None)
            mod.__dict__.update(plain)


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
        Bool masks keyed by parameter name, of the parameter's shape; integer or floating tensors holding only 0
        and 1 are accepted and converted. An already pruned parameter gets the intersection (torch's
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
    All or nothing: every mask and scale is checked first, and if writing still fails part-way (any exception),
    every module touched is rolled back (parameters, buffers, hooks and scaled weights) before the error is
    re-raised, so the model is exactly as it was.

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
    if graph is not None and isinstance(graph, Mapping) and masks is None:
        raise ParameterError("The 'graph' parameter of apply_masks got a dict: pass masks by keyword, "
                             "apply_masks(model, masks=masks), or apply_masks(model, G, masks).")
    if masks is None:
        if graph is None:
            raise ParameterError("apply_masks needs 'masks' or a 'graph' whose masks to apply: "
                                 "apply_masks(model, G, masks) or apply_masks(model, masks=masks).")
        if not hasattr(graph, "masks") or not hasattr(graph, "weight_blocks"):
            raise ParameterError(f"The 'graph' parameter of apply_masks must be a MultipartiteGraph. Got "
                                 f"{type(graph).__name__} instead.")
        masks = graph.masks
    plan = _check(model, masks)
    sc_plan = _check(model, scales, "scale") if scales is not None else []
    targets = []
    for holders, _ in sc_plan:
        mod, attr = holders[0]
        targets.append(original(mod, attr))
    snap = _Snapshot([mod for holders, _ in plan + sc_plan for mod, _ in holders],
                     sorted({attr for holders, _ in plan for _, attr in holders}), targets)
    try:
        with torch.no_grad():  # every check passed: now write
            for target, (_, s) in zip(targets, sc_plan):
                target.mul_(s.to(target.dtype))
        for holders, m in plan:
            for mod, attr in holders:
                prune.custom_from_mask(mod, attr, m)
                if not any(isinstance(h, _DetachPrunedWeight) and h.name == attr
                           for h in mod._forward_hooks.values()):
                    mod.register_forward_hook(_DetachPrunedWeight(attr))
                _DetachPrunedWeight(attr)(mod, None, None)
    except BaseException:
        snap.restore()
        raise
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
    check_param("model", model, [InstanceOf(nn.Module, "a torch.nn.Module")], "make_permanent")
    for mod in model.modules():
        for hook in list(mod._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                prune.remove(mod, hook._tensor_name)
        for key, hook in list(mod._forward_hooks.items()):
            if isinstance(hook, _DetachPrunedWeight):
                del mod._forward_hooks[key]
    return model
