"""``check_sparsifier``: the conformance check any sparsifier plug-in can run (like scikit-learn's check_estimator)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import GraphPruneError, ParameterError
from .base import Sparsifier

__all__ = ["check_sparsifier", "SparsifierCheckError"]


class SparsifierCheckError(GraphPruneError, AssertionError):
    """A sparsifier breaks the protocol; the message names the property."""


def _graphs():
    from ..export import from_model

    gen = torch.Generator().manual_seed(0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        mlp = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 6))
        cnn = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Conv2d(6, 8, 3, groups=2), nn.Flatten(),
                            nn.Linear(8 * 4 * 4, 5))
    return [from_model(mlp, torch.randn(1, 12, generator=gen)), from_model(cnn, torch.randn(1, 3, 8, 8, generator=gen))]


def check_sparsifier(cls, *, options: dict | None = None, sparsities=(0.5, 0.9)):
    """Check that a Sparsifier subclass follows the protocol; raise SparsifierCheckError naming what fails.

    Checks: the constructor only stores its parameters (no validation, no work); ``repr`` names the class and its
    parameters; bad sparsity raises ParameterError when the work starts; the input graph (masks and weights) is
    not mutated; masks are bool tensors of each parameter's shape; the density is hit exactly per block under
    uniform allocation; masks only shrink on an already masked graph; the same seed gives the same masks.

    Parameters
    ----------
    cls : type
        A :class:`~graphprune.sparsify.Sparsifier` subclass.
    options : dict, optional
        Extra constructor arguments.

    Examples
    --------
    >>> from graphprune.sparsify import check_sparsifier, get_sparsifier
    >>> check_sparsifier(get_sparsifier("random"))
    """
    options = dict(options or {})
    if not (isinstance(cls, type) and issubclass(cls, Sparsifier)):
        raise SparsifierCheckError(f"{cls!r} is not a Sparsifier subclass.")
    name = cls.__name__

    def fail(msg):
        raise SparsifierCheckError(f"{name}: {msg}")

    try:
        cls(sparsity=7.0, seed=0, **options)
    except Exception as exc:  # noqa: BLE001
        fail(f"the constructor must only store parameters, but it raised {type(exc).__name__}: {exc}")
    sp = cls(sparsity=0.5, seed=0, **options)
    text = repr(sp)
    if name not in text or "sparsity=0.5" not in text:
        fail(f"repr must name the class and its parameters; got {text!r}")
    for G in _graphs():
        try:
            cls(sparsity=1.5, seed=0, **options).sparsify(G)
        except ParameterError:
            pass
        else:
            fail("sparsity=1.5 must raise ParameterError when sparsify starts")
        for s in sparsities:
            before_masks = G.masks
            before_w = {b.name: b.weight.detach().clone() for b in G.weight_blocks}
            masks = cls(sparsity=s, seed=3, **options).sparsify(G)
            if any(not torch.equal(G.masks[k], before_masks[k]) for k in before_masks) or any(
                    not torch.equal(b.weight, before_w[b.name]) for b in G.weight_blocks):
                fail("sparsify mutated its input graph")
            if set(masks) != set(G.params):
                fail(f"masks must cover every parameter {G.params}; got {sorted(masks)}")
            for b in G.weight_blocks:
                m = masks[b.param]
                if m.dtype != torch.bool or tuple(m.shape) != G.param_shapes[b.param]:
                    fail(f"mask of {b.param!r} must be bool of shape {G.param_shapes[b.param]}")
                want = round((1 - s) * b.num_edges)
                if int(m.sum()) != want:
                    fail(f"density not hit on {b.param!r} at sparsity {s}: kept {int(m.sum())}, expected {want}")
            again = cls(sparsity=s, seed=3, **options).sparsify(G)
            if any(not torch.equal(masks[k], again[k]) for k in masks):
                fail("the same graph and seed must give the same masks")
            H = G.with_masks(masks)
            shrunk = cls(sparsity=s, seed=4, **options).sparsify(copy.copy(H))
            for k, m in shrunk.items():
                if bool((m & ~masks[k]).any()):
                    fail(f"masks must only shrink: {k!r} revived pruned edges")
