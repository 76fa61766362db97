"""Sparsifiers: generic algorithms that turn a MultipartiteGraph into masks.

``sparsify(graph, "spectral", sparsity=0.9, seed=0)`` looks the method up by name; see :mod:`.base` for the
protocol a plug-in implements and :func:`check_sparsifier` for its conformance check.
"""

from __future__ import annotations

from .._validation import check_options
from ..errors import ParameterError
from . import calibrated as _calibrated  # noqa: F401  (registers)
from . import degree as _degree  # noqa: F401  (registers)
from . import elementwise as _elementwise  # noqa: F401  (registers)
from . import magnitude as _magnitude  # noqa: F401  (registers)
from . import random as _random  # noqa: F401  (registers)
from . import saliency as _saliency  # noqa: F401  (registers)
from . import spectral as _spectral  # noqa: F401  (registers)
from .base import ALLOCATIONS, BlockContext, Sparsifier, make_rng, topk_mask
from .check import SparsifierCheckError, check_sparsifier
from .registry import available_sparsifiers, get_sparsifier, register

__all__ = ["sparsify", "check_sparsifier", "SparsifierCheckError", "Sparsifier", "BlockContext", "register",
           "get_sparsifier", "available_sparsifiers", "make_rng", "topk_mask", "ALLOCATIONS"]


def sparsify(graph, method="random", *, sparsity=None, density=None, seed=0, **options):
    """Masks for ``graph`` from the sparsifier registered as ``method`` (or a Sparsifier instance or class).

    Parameters
    ----------
    graph : MultipartiteGraph
    method : str, Sparsifier subclass or instance
        A registry name (see :func:`available_sparsifiers`).
    sparsity, density : float
        Exactly one: the fraction of prunable weights to remove, or to keep.
    seed : int, numpy.random.Generator or torch.Generator, default 0
    **options
        Passed to the sparsifier's constructor (``allocation``, ``keep_dense``, ``progress``, method options).

    Returns
    -------
    dict of str to torch.Tensor
        Bool masks keyed by parameter name, of each parameter's shape. The graph is not modified.

    Examples
    --------
    >>> import torch, graphprune
    >>> net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> G = graphprune.from_model(net, torch.randn(1, 8))
    >>> masks = graphprune.sparsify(G, "random", sparsity=0.5, seed=0)
    >>> G.with_masks(masks).density()
    0.5
    """
    if isinstance(method, Sparsifier):
        given = [k for k, v in (("sparsity", sparsity), ("density", density)) if v is not None] + list(options)
        if given:
            raise ParameterError(f"sparsify() got a {type(method).__name__} instance and also {', '.join(given)}: "
                                 "with an instance, pass every option to its constructor.")
        return method.sparsify(graph)
    cls = resolve(method, owner="sparsify", options=options)
    return cls(sparsity=sparsity, density=density, seed=seed, **options).sparsify(graph)


def resolve(method, *, owner: str, options=(), extra=()) -> type:
    """The Sparsifier class named by ``method`` (a registry name or a subclass), with ``options`` checked against
    its constructor's parameters (``extra`` names the caller's own options); ParameterError otherwise."""
    if isinstance(method, type) and issubclass(method, Sparsifier):
        cls = method
    elif isinstance(method, str):
        cls = get_sparsifier(method)
    else:
        raise ParameterError(f"The 'method' parameter of {owner} must be a sparsifier name (one of "
                             f"{', '.join(available_sparsifiers())}), a Sparsifier subclass or instance. "
                             f"Got {method!r} instead.")
    known = [n for n in cls._get_param_names() if n not in ("sparsity", "density", "seed")] + list(extra)
    check_options(f"{owner}() with {cls.__name__}" if owner != "sparsify" else cls.__name__, options, known)
    return cls
