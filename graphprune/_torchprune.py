"""torch.nn.utils.prune's naming, known here only.

``torch.nn.utils.prune`` re-parametrises a pruned parameter ``weight`` of a module as a parameter
``weight_orig``, a buffer ``weight_mask`` and a plain attribute ``weight`` (their product, recomputed by a
forward pre-hook). Every module of graphprune that reads a possibly pruned model (export, calibration, apply)
asks this module for the parameter's canonical name and its tensors, so the suffixes are written once.

This module imports nothing of graphprune's (it sits at the bottom of the layers, beside ``errors`` and
``_validation``).
"""

from __future__ import annotations

__all__ = ["ORIG", "MASK", "canonical", "original", "pruned"]

#: Suffix of the parameter that holds the unmasked values of a pruned parameter.
ORIG = "_orig"
#: Suffix of the buffer that holds the mask of a pruned parameter.
MASK = "_mask"

_MISSING = object()


def canonical(name: str) -> str:
    """The parameter's name without torch.prune's ``_orig`` suffix.

    Examples
    --------
    >>> canonical("features.0.weight_orig"), canonical("features.0.weight")
    ('features.0.weight', 'features.0.weight')
    """
    return name[: -len(ORIG)] if name.endswith(ORIG) else name


def original(module, attr: str, default=_MISSING):
    """The tensor that holds ``module.<attr>``'s values: ``<attr>_orig`` when pruned, else ``<attr>`` itself.

    Parameters
    ----------
    module : torch.nn.Module
    attr : str
        The canonical attribute name (``"weight"``).
    default : object, optional
        Returned when the module has neither attribute; without it, ``AttributeError`` as ``getattr`` raises.
    """
    t = getattr(module, attr + ORIG, None)
    if t is not None:
        return t
    if default is _MISSING:
        return getattr(module, attr)
    return getattr(module, attr, default)


def pruned(module, attr: str):
    """``(orig, mask)`` of a parameter that torch.prune re-parametrised, or None when ``module.<attr>`` is plain."""
    if hasattr(module, attr + ORIG) and hasattr(module, attr + MASK):
        return getattr(module, attr + ORIG), getattr(module, attr + MASK)
    return None
