"""The graphprune error hierarchy.

Every error the library raises on bad input derives from :class:`GraphPruneError`, so callers can catch one class.
Messages name the parameter, the value received and the fix. When an error is raised, the model and the graph
passed in are left exactly as they were.
"""

from __future__ import annotations

__all__ = [
    "GraphPruneError",
    "GraphValidationError",
    "ParameterError",
    "MaskError",
    "UnsupportedModuleError",
    "UnsupportedOperationError",
    "TracingError",
    "MissingDependencyError",
    "UnknownSparsifierError",
    "CheckpointError",
    "JobError",
    "SparsifierCheckError",
    "ShrinkError",
]


class GraphPruneError(Exception):
    """Root of every error raised by graphprune."""


class ParameterError(GraphPruneError, ValueError):
    """A function or sparsifier argument is out of range or of the wrong type."""


class GraphValidationError(GraphPruneError, ValueError):
    """A :class:`~graphprune.MultipartiteGraph` is inconsistent (bad indices, shapes or partitions)."""


class MaskError(GraphPruneError, ValueError):
    """Masks do not fit the graph or the model (unknown parameter, wrong shape or dtype)."""


class UnsupportedModuleError(GraphPruneError, TypeError):
    """The model holds parametrised modules that the exporter cannot turn into edges.

    Attributes
    ----------
    modules : list of tuple of (str, str)
        ``(qualified name, type name)`` of every unsupported module.
    """

    def __init__(self, modules):
        self.modules = list(modules)
        listing = ", ".join(f"'{name}' ({kind})" for name, kind in self.modules)
        super().__init__(
            f"Cannot export {len(self.modules)} parametrised module(s) with no graph encoding: {listing}. "
            "Pass skip_unsupported=True to from_model to skip them (they become pass-through or cut points), "
            "or leaf_modules=... with an adapter."
        )


class UnsupportedOperationError(GraphPruneError, TypeError):
    """A traced operation changes the channel layout in a way the exporter cannot follow."""


class TracingError(GraphPruneError, RuntimeError):
    """The model could not be traced into a dataflow graph."""


class MissingDependencyError(GraphPruneError, ImportError):
    """An optional backend (graph-tool, torch_geometric, ...) is not installed."""


class UnknownSparsifierError(GraphPruneError, KeyError):
    """A sparsifier name is not in the registry."""

    def __str__(self):  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class CheckpointError(GraphPruneError, ValueError):
    """A checkpoint directory is missing files, has a bad index or header, or does not match the model."""


class JobError(GraphPruneError, RuntimeError):
    """A job failed in a worker (or in this process); the message names the job and the worker's error."""


class SparsifierCheckError(GraphPruneError, AssertionError):
    """A sparsifier breaks the protocol (:func:`graphprune.check_sparsifier`); the message names the property."""


class ShrinkError(GraphPruneError, RuntimeError):
    """A structured shrink (:func:`graphprune.shrink`) could not be built or does not run; the model was left as it
    was."""
