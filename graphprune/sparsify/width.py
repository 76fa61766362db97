"""Moved to :mod:`graphprune.sparsify.spectral.width` (the spectral sparsifier is one package). This module only
re-exports it for tests/test_digits2d.py and benchmarks/bench_depthwise.py until they import the new path; delete
it then."""

from .spectral.width import *  # noqa: F401,F403
from .spectral.width import __all__  # noqa: F401
