"""Structured reasons: why a value is undefined, infinite or alarming, made where the reason arises.

An analyser that cannot give a value (a spectral metric of a disconnected block, a layer with no effective edge)
returns a :class:`Reason`: a stable ``code``, the ``numbers`` behind it and the sentence it has always written
(``text``). The report renders reasons from ``code`` and ``numbers``; nothing parses a sentence back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Reason"]


@dataclass(frozen=True)
class Reason:
    """Why a value is missing, infinite or a warning.

    Attributes
    ----------
    code : str
        Stable identifier, e.g. ``"disconnected"``, ``"average_degree"``, ``"layer_collapsed"``.
    text : str
        The full sentence, as the analyser writes it in its ``reason`` string or finding list.
    numbers : dict
        The quantities the sentence is made of (``{"components": 4, "dense_components": 1}``), for renderers.

    Examples
    --------
    >>> r = Reason("disconnected", "the sparse block has 4 connected components where the dense one has 1",
    ...            {"components": 4, "dense_components": 1})
    >>> r.code, r.numbers["components"]
    ('disconnected', 4)
    """

    code: str
    text: str
    numbers: dict = field(default_factory=dict)

    def __str__(self) -> str:
        return self.text
