"""One call for big models: export, sparsify and write back, optionally streaming block by block in place."""

from __future__ import annotations

import logging
from collections import Counter

import torch
from torch import nn

from .apply import apply_masks
from .errors import ParameterError
from .export import from_model
from .masks import PackedMasks, sparsity_summary
from .sparsify import Sparsifier, resolve
from .sparsify.calibrated import CalibratedSparsifier

__all__ = ["prune"]

log = logging.getLogger("graphprune")


#: The method of :func:`prune` without calibration data, and with it (the winner of the trained-model study).
DEFAULT_METHOD = "spectral"
DEFAULT_CALIBRATED_METHOD = "flow"


def prune(model: nn.Module, example_inputs, method=None, *, sparsity=None, density=None, seed=0,
          calibration=None, permanent: bool = False, progress: bool = True, export_options: dict | None = None,
          structured: bool = False, **options):
    """Export ``model``, compute masks with ``method`` and write them back, in one call.

    Parameters
    ----------
    model : torch.nn.Module
        Modified in place.
    example_inputs : torch.Tensor or tuple of torch.Tensor
        Inputs for the export's one forward pass (:func:`graphprune.from_model`).
    method : str, Sparsifier subclass or instance, optional
        A registry name (:func:`graphprune.sparsify.available_sparsifiers`). Default: ``"spectral"``, or
        ``"flow"`` when ``calibration`` is given (the best method of the trained-model study, the guide
        "Pruning trained networks", docs/source/guides/trained.md).
    sparsity, density : float
        Exactly one: the fraction of prunable weights to remove, or to keep (or ``nm=(2, 4)`` for N:M methods).
    seed : int, numpy.random.Generator or torch.Generator, default 0
    calibration : tensor, dict of tensors or iterable of batches, optional
        Calibration inputs for a data-aware method (``flow``, ``wanda``, ``sparsegpt``, ``ria``; also the
        ``data`` of ``snip`` and ``grasp``): a tensor of model inputs, a dict of tensors for a Hugging Face model,
        or a DataLoader (``(input, label)`` batches give their inputs). Statistics are gathered sequentially, each
        stage on the model with the earlier stages already pruned (:mod:`graphprune.calibrate`). Checked, with a
        whole forward pass, before any weight is touched.
    permanent : bool, default False
        False: masks through ``torch.nn.utils.prune`` (:func:`graphprune.apply_masks`; a ``weight_orig`` copy per
        parameter, undoable). True: stream: each block's mask is computed and its pruned weights are set to zero
        in place before the next block starts; no ``weight_orig``, no bool mask of the whole model. Memory stays
        at the model plus the largest block's working set.
    progress : bool, default True
        A tqdm bar over blocks; False prints nothing.
    export_options : dict, optional
        Passed to :func:`graphprune.from_model` (``leaf_modules``, ``tracer``, ...).
    structured : bool, default False
        Remove whole neurons, channels and attention heads and rebuild the layers smaller
        (:mod:`graphprune.structured`): ``method`` is then a node criterion (default ``"leverage"``; ``"l2"``,
        ``"l1"``, ``"degree"``, ``"random"``), ``sparsity`` (or ``1 - density``) the fraction of each layer's
        groups to remove, and ``options`` those of :func:`~graphprune.structured.select_nodes` (``allocation``,
        ``kinds``, ``round_to``) and :func:`~graphprune.structured.shrink` (``hf_config``, ``allow_width``).
        With ``calibration`` the criterion is data-aware (edge weights ``|w_ij| ||X_j||``, see
        :func:`~graphprune.structured.node_scores`). Returns the node masks; the model is shrunk in place (and
        checked on ``example_inputs``).
    **options
        Passed to the sparsifier's constructor (``allocation``, ``keep_dense``, method options such as
        ``dtype=torch.float32`` for spectral).

    Returns
    -------
    Mapping of str to torch.Tensor
        The masks keyed by parameter name. With ``permanent=True`` a :class:`graphprune.masks.PackedMasks`
        (one bit per weight; each mask expands to a bool tensor when read), else a dict of bool tensors. Their
        per-parameter sparsities: ``masks.table()`` (PackedMasks) or :func:`graphprune.masks.mask_table`, a
        pandas DataFrame; one INFO line on the ``graphprune`` logger summarises them (least and most pruned
        parameter, sparsity per kind: attention, MLP, embedding, head, ...).

    Raises
    ------
    ParameterError
        Bad ``model``, method or options (raised before any weight is touched).

    Notes
    -----
    With ``permanent=True`` the arguments, the graph and every weight are checked before the first block is
    written; an error raised later by the sparsifier itself (a plug-in's bug) leaves the blocks already done
    zeroed. The masks equal those of ``permanent=False`` byte for byte: a block's mask depends only on scores
    computed before it is written (its own weights, or whole-graph scores computed up front).

    Examples
    --------
    >>> import torch, graphprune
    >>> net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    >>> masks = graphprune.prune(net, torch.randn(1, 8), "magnitude", sparsity=0.75, permanent=True,
    ...                          progress=False)
    >>> int((net[0].weight != 0).sum()), masks["0.weight"].sum().item()
    (32, 32)
    """
    if not isinstance(model, nn.Module):
        raise ParameterError(f"The 'model' parameter of prune must be a torch.nn.Module. Got "
                             f"{type(model).__name__} instead.")
    if not isinstance(permanent, bool):
        raise ParameterError(f"The 'permanent' parameter of prune must be True or False. Got {permanent!r}.")
    if not isinstance(structured, bool):
        raise ParameterError(f"The 'structured' parameter of prune must be True or False. Got {structured!r}.")
    if structured:
        return _structured(model, example_inputs, method, sparsity, density, seed, calibration, export_options,
                           options)
    if method is None:
        method = DEFAULT_METHOD if calibration is None else DEFAULT_CALIBRATED_METHOD
    if calibration is not None:
        options = _with_calibration(method, model, calibration, options)
    sp = _sparsifier(method, sparsity, density, seed, progress, options)
    if isinstance(sp, CalibratedSparsifier) and sp.model is not None and sp.model is not model:
        raise ParameterError(f"The 'model' of the {type(sp).__name__} instance passed to prune is not the model "
                             "being pruned: its calibration runs on that model and its repairs are written there. "
                             "Build the sparsifier with model=<the model passed to prune>.")
    d = sp.validate()  # argument errors before the (possibly long) export
    G = from_model(model, example_inputs, **(export_options or {}))
    if not permanent:
        masks = sp.sparsify(G)
        _write_weights(model, getattr(sp, "weights_", None))
        apply_masks(model, masks=masks)
        _log_summary(sp, d, masks)
        return masks
    masks = _prune_in_place(sp, G)
    _log_summary(sp, d, masks)
    return masks


def _log_summary(sp, d, masks) -> None:
    """One INFO line on the ``graphprune`` logger: the per-parameter and per-kind sparsities of the result
    (:func:`graphprune.masks.sparsity_summary`; the full table is ``masks.table()`` or ``mask_table(masks)``)."""
    if log.isEnabledFor(logging.INFO):
        engines = getattr(sp, "resistance_method_", None) or {}
        used = ", ".join(f"{m} {n}" for m, n in sorted(Counter(engines.values()).items()))
        log.info("prune: %s at sparsity %.4f asked: %s%s", type(sp).__name__, 1.0 - d, sparsity_summary(masks),
                 f"; resistances by engine (blocks): {used}" if used else "")


def _structured(model, example_inputs, method, sparsity, density, seed, calibration, export_options, options):
    """``prune(..., structured=True)``: node masks from select_nodes, then shrink (graphprune.structured)."""
    from ._validation import check_options
    from .structured import select_nodes, shrink

    if (sparsity is None) == (density is None):
        raise ParameterError("prune(structured=True) takes exactly one of 'sparsity' (the fraction of each layer's "
                             f"groups to remove) and 'density'. Got sparsity={sparsity!r}, density={density!r}.")
    if method is not None and not isinstance(method, str):
        raise ParameterError(f"The 'method' parameter of prune(structured=True) must be a node criterion name. Got "
                             f"{type(method).__name__} instead.")
    check_options("prune(structured=True)", options, ("allocation", "kinds", "round_to", "hf_config", "allow_width"))
    amount = sparsity if sparsity is not None else 1.0 - density
    G = from_model(model, example_inputs, **(export_options or {}))
    data = {} if calibration is None else {"model": model, "calibration": calibration}
    keep = select_nodes(G, amount, criterion=method or "leverage", seed=seed, **data,
                        **{k: v for k, v in options.items() if k in ("allocation", "kinds", "round_to")})
    shrink(model, G, keep, example_inputs=example_inputs,
           **{k: v for k, v in options.items() if k in ("hf_config", "allow_width")})
    return keep


def _with_calibration(method, model, calibration, options) -> dict:
    """``options`` with ``model`` and ``data`` for a method that takes calibration data; ParameterError else."""
    if isinstance(method, Sparsifier):
        raise ParameterError("Pass calibration data to the Sparsifier's constructor (data=...), not to prune(), "
                             "with an instance.")
    cls = resolve(method, owner="prune")
    if "data" not in cls._get_param_names():
        raise ParameterError(f"The 'calibration' parameter of prune is only used by data-aware methods; "
                             f"{cls.__name__} ({method!r}) uses no data. Use method='flow', 'wanda', 'sparsegpt' or "
                             "'ria', or drop calibration.")
    for key in ("model", "data"):
        if key in options:
            raise ParameterError(f"prune() got calibration and also {key}=: prune passes the model and the "
                                 f"calibration data itself. Drop {key}=.")
    return {**options, "model": model, "data": calibration}


def _write_weights(model, weights) -> None:
    """Copy repaired weights (a data-aware sparsifier's ``weights_``, computed on its copy) into ``model``."""
    if not weights:
        return
    from .calibrate import param_of

    with torch.no_grad():
        for name, w in weights.items():
            param_of(model, name).copy_(w)


def _sparsifier(method, sparsity, density, seed, progress, options) -> Sparsifier:
    if isinstance(method, Sparsifier):
        if sparsity is not None or density is not None or options:
            raise ParameterError("Pass options to the Sparsifier's constructor, not to prune(), with an instance.")
        return method
    cls = resolve(method, owner="prune", options=options, extra=("export_options",))
    return cls(sparsity=sparsity, density=density, seed=seed, progress=progress, **options)


def _prune_in_place(sp: Sparsifier, G) -> PackedMasks:
    """Stream the masks (:meth:`Sparsifier.iter_masks`, ``in_place=True``: data-aware methods gather their
    statistics on the model itself): each parameter's pruned weights are zeroed as soon as its mask is complete,
    and the mask is packed, before the next block starts."""
    blocks = {}  # the pruned units of each parameter (sliced parameters have several)
    for b in sp.units(G):
        if not sp.keeps_dense(b):
            blocks.setdefault(b.param, []).append(b)
    out = PackedMasks()
    for name, m in sp.iter_masks(G, by="param", in_place=True):
        for b in blocks.get(name, ()):
            _zero_in_place(b, b.rows(m))
        out.add(name, m)
        del m  # nothing of this parameter stays alive while the next one is computed
    return out


def _zero_in_place(b, m: torch.Tensor) -> None:
    """Set the pruned weights of one block to zero in the model's own storage (the block's weight is a view)."""
    with torch.no_grad():
        b.weight.masked_fill_(~m.to(b.weight.device), 0)
