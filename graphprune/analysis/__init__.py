"""Analysers: plain functions ``metric(G, *, mask=None, ...)``, one module per family."""

from .spectral import block_spectral_similarity, spectral_similarity

__all__ = ["spectral_similarity", "block_spectral_similarity"]
