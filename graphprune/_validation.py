"""One parameter contract for every public entry point: constraints, messages, seeds, masks and allowed values.

Each sparsifier and each public function declares its parameters' constraints once (a dict name -> list of
constraints, any one of which may hold, in the spirit of scikit-learn's ``utils/_param_validation.py``); one
formatter writes every message::

    The 'sparsity' parameter of SpectralSparsifier must be a float in [0, 1) or None. Got 1.5 instead.

The allowed-value lists (views, resistance methods, allocations, tracers, datasets, ...) live here and nowhere
else; the command line's ``choices`` come from them. This module sits at the bottom of the package: it imports
nothing of graphprune's but :mod:`graphprune.errors`.
"""

from __future__ import annotations

import functools
import inspect
import numbers
import os
from collections.abc import Iterable, Mapping
from typing import NamedTuple

import numpy as np
import torch

from .errors import MaskError, ParameterError

__all__ = [
    "Interval", "Options", "Boolean", "InstanceOf", "StrList", "Seed", "Dtype", "Device", "PathLike", "Shape",
    "Callable", "check_param", "validate_params", "check_options", "seed_sequence", "numpy_rng", "torch_seed",
    "check_mask", "check_mask_key", "check_graph", "show_typed", "VIEWS", "ALLOCATIONS", "RESISTANCE_METHODS",
    "BLOCK_RESISTANCE_METHODS", "SAMPLINGS", "SCOPES", "TRACERS", "DATASETS", "ANALYSIS_BACKENDS", "SALIENCY_MODES",
    "COMPARISONS", "REPAIRS", "TARGETS", "CRITERIA", "MASK_FILE_FORMATS", "WIDTHS", "EXECUTORS", "ARMS", "INPUT_DTYPES",
    "RESISTANCE_BACKENDS", "LAPLACIAN_METHODS", "LAPLACIAN_SOLVERS",
    "SparsifierInputs", "sparsifier_inputs",
]

# -- the allowed-value lists, in one place ----------------------------------------------------------------------
VIEWS = ("channel", "rolled")
ALLOCATIONS = ("uniform", "erk", "igq", "global")
RESISTANCE_METHODS = ("auto", "exact", "degree", "jl")
BLOCK_RESISTANCE_METHODS = ("auto", "exact", "degree")
SAMPLINGS = ("without_replacement", "with_replacement")
SCOPES = ("block", "graph")
TRACERS = ("auto", "fx", "export")
DATASETS = ("mnist1d", "synthetic", "digits2d", "digits2d-rgb")
ANALYSIS_BACKENDS = ("scipy", "networkx", "graph_tool")
SALIENCY_MODES = ("train", "eval")
COMPARISONS = ("block", "row")
REPAIRS = ("auto", "ls", "obs", "none")
TARGETS = ("dense", "pruned")
CRITERIA = ("leverage", "degree", "flow")
MASK_FILE_FORMATS = ("auto", "safetensors", "torch")
WIDTHS = ("auto", "all")  # SpectralSparsifier's width
RESISTANCE_BACKENDS = ("auto", "scipy", "torch")  # the exact bipartite engine's linear algebra
LAPLACIAN_METHODS = ("exact", "jl")  # laplacian_resistance (whole graphs)
LAPLACIAN_SOLVERS = ("lu", "cg")  # its JL solves
EXECUTORS = ("local", "ray")  # the command line's --executor
ARMS = ("init", "post")  # the study's arms
INPUT_DTYPES = ("float", "long")  # the command line's --input-dtype (example inputs: floats or token ids)


# -- constraints ------------------------------------------------------------------------------------------------
class Constraint:
    """A condition on one value; ``str()`` is the phrase used in messages ("a float in [0, 1)")."""

    def is_satisfied_by(self, value) -> bool:  # pragma: no cover - interface
        raise NotImplementedError

    def __str__(self):  # pragma: no cover - interface
        raise NotImplementedError


class _NoneConstraint(Constraint):
    def is_satisfied_by(self, value):
        return value is None

    def __str__(self):
        return "None"


class Interval(Constraint):
    """A real or integral number in an interval; bools are never numbers here.

    Parameters
    ----------
    kind : numbers.Integral or numbers.Real
    left, right : float or None
        Bounds; None is unbounded.
    closed : {"left", "right", "both", "neither"}
    """

    def __init__(self, kind, left, right, *, closed="both"):
        self.kind, self.left, self.right, self.closed = kind, left, right, closed

    def is_satisfied_by(self, value):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, self.kind):
            return False
        if isinstance(value, numbers.Real) and value != value:  # NaN
            return False
        lo_ok = self.left is None or (value >= self.left if self.closed in ("left", "both") else value > self.left)
        hi_ok = self.right is None or (value <= self.right if self.closed in ("right", "both") else value < self.right)
        return bool(lo_ok and hi_ok)

    def __str__(self):
        what = "an int" if self.kind is numbers.Integral else "a float"
        lb = "[" if self.closed in ("left", "both") and self.left is not None else "("
        rb = "]" if self.closed in ("right", "both") and self.right is not None else ")"
        lo = "-inf" if self.left is None else f"{self.left:g}"
        hi = "inf" if self.right is None else f"{self.right:g}"
        return f"{what} in {lb}{lo}, {hi}{rb}"


class Options(Constraint):
    """One of a fixed set of values (usually strings)."""

    def __init__(self, values):
        self.values = tuple(values)

    def is_satisfied_by(self, value):
        if isinstance(value, (bool, np.bool_)) and not any(isinstance(v, bool) for v in self.values):
            return False  # True == 1: a bool is not the option 1
        try:
            return isinstance(value, str) == all(isinstance(v, str) for v in self.values) and value in self.values
        except TypeError:  # unhashable or odd comparisons
            return False

    def __str__(self):
        return "one of " + ", ".join(repr(v) for v in self.values)


class Boolean(Constraint):
    """Strictly ``True`` or ``False`` (``"no"`` is not False)."""

    def is_satisfied_by(self, value):
        return isinstance(value, (bool, np.bool_))

    def __str__(self):
        return "a bool (True or False)"


class InstanceOf(Constraint):
    def __init__(self, types, description=None):
        self.types = types if isinstance(types, tuple) else (types,)
        self.description = description

    def is_satisfied_by(self, value):
        return isinstance(value, self.types)

    def __str__(self):
        if self.description:
            return self.description
        names = [t.__module__.replace("builtins", "") + ("." if t.__module__ != "builtins" else "") + t.__qualname__
                 for t in self.types]
        return "an instance of " + " or ".join(names)


class StrList(Constraint):
    """A list, tuple or set of str (names or glob patterns); a bare str is refused (it would be read char by char)."""

    def is_satisfied_by(self, value):
        return isinstance(value, (list, tuple, set, frozenset)) and all(isinstance(x, str) for x in value)

    def __str__(self):
        return "a list of str (parameter names or glob patterns)"


class Seed(Constraint):
    """An int >= 0, a ``numpy.random.Generator`` or a ``torch.Generator`` (never None: results are reproducible)."""

    def is_satisfied_by(self, value):
        if isinstance(value, (bool, np.bool_)):
            return False
        if isinstance(value, numbers.Integral):
            return value >= 0
        return isinstance(value, (np.random.Generator, torch.Generator))

    def __str__(self):
        return "an int >= 0, a numpy.random.Generator or a torch.Generator"


class Dtype(Constraint):
    def __init__(self, allowed=(torch.float32, torch.float64)):
        self.allowed = tuple(allowed)

    def is_satisfied_by(self, value):
        return isinstance(value, torch.dtype) and value in self.allowed

    def __str__(self):
        return " or ".join(str(d) for d in self.allowed)


class Device(Constraint):
    """A ``torch.device`` or a string torch understands as one (``"cpu"``, ``"cuda:0"``)."""

    def is_satisfied_by(self, value):
        if isinstance(value, torch.device):
            return True
        if not isinstance(value, str):
            return False
        try:
            torch.device(value)
        except (RuntimeError, ValueError, TypeError):
            return False
        return True

    def __str__(self):
        return "a torch.device or a device string such as 'cpu' or 'cuda:0'"


class PathLike(Constraint):
    def is_satisfied_by(self, value):
        return isinstance(value, (str, os.PathLike))

    def __str__(self):
        return "a str or os.PathLike file path"


class Shape(Constraint):
    """A tuple or list of positive ints."""

    def is_satisfied_by(self, value):
        return (isinstance(value, (tuple, list, torch.Size)) and len(value) > 0
                and all(Interval(numbers.Integral, 1, None).is_satisfied_by(x) for x in value))

    def __str__(self):
        return "a tuple of positive ints"


class Callable(Constraint):
    def is_satisfied_by(self, value):
        return callable(value)

    def __str__(self):
        return "a callable"


class DensityDict(Constraint):
    """A dict of parameter or block name (glob patterns allowed) -> density in (0, 1]."""

    def is_satisfied_by(self, value):
        return isinstance(value, Mapping) and all(
            isinstance(k, str) and Interval(numbers.Real, 0, 1, closed="right").is_satisfied_by(v)
            for k, v in value.items())

    def __str__(self):
        return "a dict of str (parameter name or glob pattern) -> density in (0, 1]"


class NMPattern(Constraint):
    """An N:M sparsity pattern: ``(n, m)`` or ``"n:m"`` with integers ``0 < n < m`` (keep n of every m)."""

    def is_satisfied_by(self, value):
        return nm_pattern(value) is not None

    def __str__(self):
        return "an N:M pattern such as (2, 4) or '2:4' (integers 0 < n < m)"


def nm_pattern(value):
    """``(n, m)`` from ``(n, m)`` or ``"n:m"``; None when ``value`` is not a valid pattern."""
    if isinstance(value, str):
        parts = value.split(":")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            return None
        value = tuple(int(p) for p in parts)
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        return None
    n, m = value
    if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in (n, m)) or not 0 < n < m:
        return None
    return int(n), int(m)


def _as_constraint(c):
    if c is None:
        return _NoneConstraint()
    if isinstance(c, Constraint):
        return c
    if isinstance(c, type):
        return InstanceOf(c)
    raise TypeError(f"not a constraint: {c!r}")  # a programming error of graphprune, not user input


def _show(value) -> str:
    if isinstance(value, (torch.nn.Module, torch.Tensor, np.ndarray)) or inspect.isclass(value):
        shape = f" of shape {tuple(value.shape)}" if hasattr(value, "shape") else ""
        return f"a {type(value).__name__}{shape}"
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a repr that fails must not hide the real message
        text = f"<{type(value).__name__}>"
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{text} ({type(value).__name__})" if not isinstance(value, (str, bool, int, float, type(None))) else text


def _join(phrases):
    phrases = list(dict.fromkeys(phrases))
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " or " + phrases[-1]


def message(name: str, owner: str, constraints, value, fix: str | None = None) -> str:
    """The one message format: "The 'name' parameter of owner must be ... Got value instead." (+ the fix)."""
    must = _join(str(_as_constraint(c)) for c in constraints)
    text = f"The '{name}' parameter of {owner} must be {must}. Got {_show(value)} instead."
    return f"{text} {fix}" if fix else text


def check_param(name: str, value, constraints, owner: str, *, fix: str | None = None):
    """Raise ParameterError unless ``value`` satisfies one of ``constraints``; return ``value``."""
    if not any(_as_constraint(c).is_satisfied_by(value) for c in constraints):
        raise ParameterError(message(name, owner, constraints, value, fix))
    return value


def check_options(owner: str, given: Iterable[str], known: Iterable[str]) -> None:
    """Raise ParameterError naming every unknown option and the known ones."""
    known = sorted(set(known))
    unknown = [k for k in given if k not in known]
    if unknown:
        names = ", ".join(repr(u) for u in unknown)
        raise ParameterError(f"Unknown option{'s' if len(unknown) > 1 else ''} {names} for {owner}. "
                             f"Known options: {', '.join(known)}.")


def validate_params(constraints: dict, *, owner: str | None = None):
    """Decorator: check a function's arguments against ``constraints`` before it runs.

    Arguments that cannot bind to the signature (an unknown keyword, a missing one) become ParameterError naming
    them and the known parameters, instead of Python's TypeError.

    Examples
    --------
    >>> @validate_params({"k": [Interval(numbers.Integral, 1, None)]})
    ... def f(x, *, k=1):
    ...     return x * k
    >>> f(2, k=3)
    6
    >>> f(2, k=0)
    Traceback (most recent call last):
    ...
    graphprune.errors.ParameterError: The 'k' parameter of f must be an int in [1, inf). Got 0 instead.
    """

    def deco(fn):
        sig = inspect.signature(fn)
        who = owner or fn.__name__
        params = [p for p in sig.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                bound = sig.bind(*args, **kwargs)
            except TypeError as exc:
                problem = str(exc)
            else:
                problem = None
            if problem is not None:
                if not any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
                    check_options(f"{who}()", kwargs, [p.name for p in params])
                raise ParameterError(f"{who}(): {problem}. Its parameters: {', '.join(p.name for p in params)}.")
            bound.apply_defaults()
            for name, cons in constraints.items():
                if name in bound.arguments:
                    check_param(name, bound.arguments[name], cons, who)
            return fn(*args, **kwargs)

        wrapper.__graphprune_constraints__ = constraints
        return wrapper

    return deco


# -- the graph argument -----------------------------------------------------------------------------------------
def _graph_fix(value) -> str:
    """How to get a MultipartiteGraph from what was passed instead."""
    if isinstance(value, torch.nn.Module):
        return "Export the model first: G = graphprune.from_model(model, example_inputs), then pass G."
    if isinstance(value, Mapping):
        return ("A dict of masks is not a graph: pass the graph first and the masks by keyword, "
                "e.g. f(G, masks=masks).")
    return "Build one with graphprune.from_model(model, example_inputs)."


_GRAPH_CLASS = "graphprune.graph.MultipartiteGraph"


def _is_graph(value) -> bool:
    """``isinstance(value, MultipartiteGraph)``, by the class's full name: this module sits below graph.py and
    never imports it (the layers contract in pyproject.toml)."""
    return any(f"{t.__module__}.{t.__qualname__}" == _GRAPH_CLASS for t in type(value).__mro__)


def check_graph(value, owner: str, name: str = "G"):
    """Raise ParameterError unless ``value`` is a :class:`~graphprune.MultipartiteGraph`; return ``value``.

    The one check of the graph argument of every graph-first public function (analysers, converters, report,
    sparsifiers). The message names the parameter, the owner, the type received and how to build a graph::

        The 'G' parameter of node_status must be a MultipartiteGraph. Got 'layer' (str) instead. Build one with
        graphprune.from_model(model, example_inputs).
    """
    if not _is_graph(value):
        raise ParameterError(f"The '{name}' parameter of {owner} must be a MultipartiteGraph. Got "
                             f"{show_typed(value)} instead. {_graph_fix(value)}")
    return value


def show_typed(value) -> str:
    """:func:`_show` that always names the type (``'layer' (str)``, ``5 (int)``, ``a Linear``)."""
    text = _show(value)
    if isinstance(value, (str, bool, int, float, type(None))):
        text = f"{text} ({type(value).__name__})"
    return text


# -- seeds ------------------------------------------------------------------------------------------------------
def seed_sequence(seed, *, owner: str = "sparsify", name: str = "seed") -> np.random.SeedSequence:
    """A ``numpy.random.SeedSequence`` from an int, a numpy Generator or a torch Generator (never global state).

    An int always gives the same sequence. A Generator is advanced by one draw (so the same Generator state gives
    the same result, and two successive calls differ, as with networkx's ``np_random_state``). ``None`` is
    refused: every random result in graphprune is reproducible.
    """
    check_param(name, seed, [Seed()], owner)
    if isinstance(seed, numbers.Integral):
        return np.random.SeedSequence(int(seed))
    if isinstance(seed, np.random.Generator):
        return np.random.SeedSequence(int(seed.integers(0, 2**63 - 1)))
    return np.random.SeedSequence(int(torch.randint(0, 2**62, (1,), generator=seed).item()))


def numpy_rng(seed, *, owner: str = "sparsify", name: str = "seed") -> np.random.Generator:
    """A fresh ``numpy.random.Generator`` from :func:`seed_sequence`."""
    return np.random.default_rng(seed_sequence(seed, owner=owner, name=name))


def torch_seed(seed, *, owner: str = "sparsify", name: str = "seed") -> int:
    """An int for ``torch.manual_seed`` inside ``torch.random.fork_rng`` derived from any accepted seed."""
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool) and seed >= 0:
        return int(seed)
    return int(seed_sequence(seed, owner=owner, name=name).generate_state(1, np.uint64)[0] % (2**63 - 1))


# -- the mask contract ------------------------------------------------------------------------------------------
def check_mask_key(key, owner: str) -> str:
    if not isinstance(key, str):
        raise MaskError(f"The 'masks' parameter of {owner} must be keyed by parameter names (str, as in "
                        f"model.named_parameters()). Got the key {_show(key)} instead.")
    return key


def check_mask(name: str, mask, shape, *, owner: str, numeric: bool = False, what: str = "mask") -> torch.Tensor:
    """One mask against the contract; returns a bool CPU tensor (a new tensor only when converted).

    Parameters
    ----------
    name : str
        The parameter the mask is for.
    mask : torch.Tensor
        A bool tensor of the parameter's shape. With ``numeric=True`` (documented per function), integer or
        floating tensors holding only 0 and 1 are accepted and converted.
    shape : tuple of int
        The parameter's shape.
    """
    if not isinstance(mask, torch.Tensor):
        raise MaskError(f"The {what} for {name!r} passed to {owner} must be a torch.Tensor of dtype torch.bool. "
                        f"Got {_show(mask)} instead.")
    if tuple(mask.shape) != tuple(shape):
        raise MaskError(f"The {what} for {name!r} passed to {owner} has shape {tuple(mask.shape)}, but the "
                        f"parameter has shape {tuple(shape)}.")
    if mask.dtype == torch.bool:
        return mask
    if mask.is_meta:
        raise MaskError(f"The {what} for {name!r} passed to {owner} is on the meta device: it holds no values.")
    if not numeric:
        raise MaskError(f"The {what} for {name!r} passed to {owner} must have dtype torch.bool. Got {mask.dtype} "
                        "instead; convert it with mask.bool() after checking it holds only 0 and 1.")
    if mask.dtype.is_complex or not bool(((mask == 0) | (mask == 1)).all()):
        bad = mask[~((mask == 0) | (mask == 1))].reshape(-1)[:3].tolist()
        raise MaskError(f"The {what} for {name!r} passed to {owner} must be boolean or hold only 0 and 1. "
                        f"It holds {bad} (dtype {mask.dtype}).")
    return mask != 0


# -- what a sparsifier takes beyond the graph --------------------------------------------------------------------
class SparsifierInputs(NamedTuple):
    """What a sparsifier class takes beyond the graph, read from its constructor and its ``needs_data`` flag.

    ``data_kind`` is ``"loader"`` when the sparsifier draws ``batches`` batches from an iterable of its own (the
    saliency methods: SNIP, GraSP, SynFlow), ``"calibration"`` when it needs a list of calibration batches (the
    calibrated methods: Wanda, RIA, SparseGPT, flow), and None when it needs no data.
    """

    model: bool
    data: bool
    needs_data: bool
    batches: bool
    input_shape: bool

    @property
    def data_kind(self):
        if self.model and self.data and self.batches:
            return "loader"
        if self.needs_data:
            return "calibration"
        return None


def sparsifier_inputs(cls) -> SparsifierInputs:
    """The one reading of "which sparsifiers need a model and data", for the command line and the study alike.

    Parameters
    ----------
    cls : type
        A :class:`~graphprune.sparsify.Sparsifier` subclass (its ``_get_param_names()`` and ``needs_data``).

    Examples
    --------
    >>> import graphprune
    >>> sparsifier_inputs(graphprune.get_sparsifier("wanda")).data_kind
    'calibration'
    >>> sparsifier_inputs(graphprune.get_sparsifier("spectral"))
    SparsifierInputs(model=False, data=False, needs_data=False, batches=False, input_shape=False)
    """
    names = set(cls._get_param_names())
    return SparsifierInputs(model="model" in names, data="data" in names,
                            needs_data=bool(getattr(cls, "needs_data", False)), batches="batches" in names,
                            input_shape="input_shape" in names)
