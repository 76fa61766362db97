"""Name -> sparsifier class registry, with third-party plug-ins from the ``graphprune.sparsifiers`` entry points.

Entry points are loaded lazily, the first time a name is looked up or listed. A plug-in that fails to load warns
and is skipped; it never breaks the shipped sparsifiers.
"""

from __future__ import annotations

import warnings

from ..errors import ParameterError, UnknownSparsifierError

__all__ = ["register", "get_sparsifier", "available_sparsifiers", "ENTRY_POINT_GROUP"]

ENTRY_POINT_GROUP = "graphprune.sparsifiers"
_REGISTRY: dict[str, type] = {}
_loaded = False


def register(cls=None, *, name: str | None = None, overwrite: bool = False):
    """Register a :class:`~graphprune.sparsify.Sparsifier` subclass under ``name`` (default ``cls.name``).

    Usable as a decorator (``@register``) or a call (``register(MySparsifier)``).
    """

    def deco(c):
        from .base import Sparsifier

        if not (isinstance(c, type) and issubclass(c, Sparsifier)):
            raise ParameterError(f"register() needs a Sparsifier subclass. Got {c!r}.")
        key = name or c.name
        if not key or not isinstance(key, str):
            raise ParameterError(f"Sparsifier {c.__name__} needs a 'name' class attribute or register(name=...).")
        if key in _REGISTRY and _REGISTRY[key] is not c and not overwrite:
            raise ParameterError(f"A sparsifier named {key!r} is already registered ({_REGISTRY[key].__name__}); "
                                 "pass overwrite=True to replace it.")
        _REGISTRY[key] = c
        return c

    return deco(cls) if cls is not None else deco


def _load_entry_points():
    global _loaded
    if _loaded:
        return
    _loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _REGISTRY:
            warnings.warn(f"Ignoring graphprune sparsifier plug-in {ep.name!r} ({ep.value}): the name is already "
                          f"taken by {_REGISTRY[ep.name].__module__}.{_REGISTRY[ep.name].__name__}. Register the "
                          "plug-in under another entry-point name.", RuntimeWarning, stacklevel=3)
            continue
        try:
            cls = ep.load()
            register(cls, name=ep.name)
        except Exception as exc:  # a broken plug-in must not break graphprune
            warnings.warn(f"Skipping graphprune sparsifier plug-in {ep.name!r} ({ep.value}): "
                          f"{type(exc).__name__}: {exc}", RuntimeWarning, stacklevel=3)


def available_sparsifiers() -> list[str]:
    """Names of every registered sparsifier, entry-point plug-ins included."""
    _load_entry_points()
    return sorted(_REGISTRY)


def get_sparsifier(name: str) -> type:
    """The sparsifier class registered as ``name``."""
    if not isinstance(name, str):
        raise ParameterError(f"A sparsifier name must be a str. Got {type(name).__name__}.")
    if name not in _REGISTRY:
        _load_entry_points()
    if name not in _REGISTRY:
        raise UnknownSparsifierError(
            f"Unknown sparsifier {name!r}. Known sparsifiers: {', '.join(available_sparsifiers())}."
        )
    return _REGISTRY[name]
