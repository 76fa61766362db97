"""Compact masks: bit-packed per parameter, and masks to and from safetensors files.

A bool mask costs one byte per weight (about 6.7 GB for a 7B-parameter model). :class:`PackedMasks` keeps eight
weights per byte and expands one parameter to a bool tensor only when it is read. The safetensors format (the
Hugging Face convention: a JSON header then raw bytes, nothing executed on load) stores one ``uint8`` entry of
packed bits per parameter, with the shapes and a format version in the header's metadata; files are written and
read one parameter at a time.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Iterator, Mapping

import numpy as np
import torch

from .errors import MaskError, MissingDependencyError, ParameterError

__all__ = ["PackedMasks", "pack_mask", "unpack_mask", "save_masks_safetensors", "load_masks_safetensors",
           "mask_file_format", "SAFETENSORS_FORMAT", "SAFETENSORS_VERSION"]

SAFETENSORS_FORMAT = "graphprune-masks"
SAFETENSORS_VERSION = 1


def pack_mask(mask) -> np.ndarray:
    """Bits of a bool mask in C order, eight per byte (``numpy.packbits``, big-endian bit order)."""
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().to("cpu", torch.bool).numpy()
    return np.packbits(np.asarray(mask, dtype=bool).reshape(-1))


def unpack_mask(packed: np.ndarray, shape) -> torch.Tensor:
    """Inverse of :func:`pack_mask`: a bool tensor of ``shape``."""
    n = int(math.prod(shape))
    bits = np.unpackbits(np.asarray(packed, dtype=np.uint8), count=n).astype(bool)
    return torch.from_numpy(bits).reshape(tuple(shape))


class PackedMasks(Mapping):
    """Read-only mapping parameter name -> bool mask, stored bit-packed (one bit per weight).

    Reading a key expands that parameter's mask to a fresh ``torch.bool`` tensor; nothing else is expanded.
    ``dict(packed)`` gives ordinary masks for :func:`graphprune.apply_masks`.

    Parameters
    ----------
    masks : mapping of str to bool tensor, optional
        Masks to pack.

    Examples
    --------
    >>> import torch
    >>> pm = PackedMasks({"w": torch.tensor([[True, False, True]])})
    >>> pm["w"].tolist(), pm.nbytes, pm.density()
    ([[True, False, True]], 1, 0.6666666666666666)
    """

    def __init__(self, masks: Mapping | None = None):
        self._bits: dict[str, np.ndarray] = {}
        self._shapes: dict[str, tuple] = {}
        self._kept: dict[str, int] = {}
        for k, v in (masks or {}).items():
            self.add(k, v)

    def add(self, name: str, mask) -> None:
        """Pack and store ``mask`` under ``name`` (replacing any previous entry)."""
        if not isinstance(mask, torch.Tensor):
            mask = torch.as_tensor(np.asarray(mask))
        if mask.dtype != torch.bool:
            raise MaskError(f"Mask for {name!r} must have dtype torch.bool. Got {mask.dtype}.")
        self._bits[name] = pack_mask(mask)
        self._shapes[name] = tuple(mask.shape)
        self._kept[name] = int(np.count_nonzero(mask.detach().to("cpu").numpy()))

    @classmethod
    def from_packed(cls, name_to_bits: Mapping, shapes: Mapping) -> PackedMasks:
        """Build from already packed bytes and shapes (as read from a file); sizes are checked."""
        out = cls()
        for name, bits in name_to_bits.items():
            shape = tuple(int(x) for x in shapes[name])
            bits = np.asarray(bits, dtype=np.uint8).reshape(-1)
            if bits.size != (math.prod(shape) + 7) // 8:
                raise MaskError(f"Packed mask for {name!r} has {bits.size} bytes; shape {shape} needs "
                                f"{(math.prod(shape) + 7) // 8}.")
            out._bits[name] = bits
            out._shapes[name] = shape
            out._kept[name] = int(np.unpackbits(bits, count=math.prod(shape)).sum())
        return out

    def _reorder(self, names) -> None:
        for d in (self._bits, self._shapes, self._kept):
            items = {n: d[n] for n in names}
            d.clear()
            d.update(items)

    def __getitem__(self, name: str) -> torch.Tensor:
        return unpack_mask(self._bits[name], self._shapes[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self._bits)

    def __len__(self) -> int:
        return len(self._bits)

    def packed(self, name: str) -> np.ndarray:
        """The packed bytes of one parameter (read-only view)."""
        v = self._bits[name].view()
        v.flags.writeable = False
        return v

    def shape(self, name: str) -> tuple:
        return self._shapes[name]

    @property
    def nbytes(self) -> int:
        """Bytes held by the packed bits."""
        return sum(b.nbytes for b in self._bits.values())

    def density(self, *, per_param: bool = False):
        """Fraction of weights kept, overall or per parameter."""
        total = {k: math.prod(s) for k, s in self._shapes.items()}
        if per_param:
            return {k: self._kept[k] / total[k] for k in total}
        t = sum(total.values())
        return sum(self._kept.values()) / t if t else 1.0

    def __repr__(self) -> str:
        return f"PackedMasks({len(self)} parameters, {self.nbytes:,} bytes, density={self.density():.4f})"


# -- safetensors ---------------------------------------------------------------------------------------------------
def _entries(masks: Mapping):
    """``(name, shape, packed bytes)`` per parameter, packing one parameter at a time."""
    if not isinstance(masks, Mapping):
        raise MaskError(f"The 'masks' parameter must be a dict of parameter name -> bool tensor. "
                        f"Got {type(masks).__name__} instead.")
    for name in masks:
        if not isinstance(name, str):
            raise MaskError(f"Mask keys must be parameter names (str). Got {name!r}.")
        if isinstance(masks, PackedMasks):
            yield name, masks.shape(name), masks.packed(name)
            continue
        m = masks[name]
        if not isinstance(m, torch.Tensor) or m.dtype != torch.bool:
            raise MaskError(f"Mask for {name!r} must be a torch.bool tensor. Got "
                            f"{getattr(m, 'dtype', type(m).__name__)}.")
        yield name, tuple(m.shape), pack_mask(m)


def save_masks_safetensors(masks: Mapping, path: str | os.PathLike) -> None:
    """Write masks to a safetensors file: one ``uint8`` entry of packed bits per parameter.

    The header's ``__metadata__`` holds ``format`` (``"graphprune-masks"``), ``version`` and ``shapes`` (JSON,
    parameter -> shape). Masks are packed and written one parameter at a time, so the extra memory is one
    parameter's bits. The file reads back with :func:`load_masks_safetensors`, or with ``safetensors.safe_open``
    and :func:`unpack_mask`.

    Parameters
    ----------
    masks : mapping of str to bool tensor, or PackedMasks
    path : str or os.PathLike

    Raises
    ------
    MaskError
        ``masks`` is not a mapping of names to bool tensors. Nothing is written then.
    """
    sizes, shapes = [], {}
    for name, shape, bits in _entries(masks):  # a first pass checks everything before the file is opened
        shapes[name] = list(shape)
        sizes.append((name, int(bits.size)))
    header, offset = {}, 0
    for name, n in sizes:
        header[name] = {"dtype": "U8", "shape": [n], "data_offsets": [offset, offset + n]}
        offset += n
    header["__metadata__"] = {"format": SAFETENSORS_FORMAT, "version": str(SAFETENSORS_VERSION),
                              "shapes": json.dumps(shapes)}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned
    tmp = os.fspath(path) + ".tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(raw)))
            f.write(raw)
            for _, _, bits in _entries(masks):
                f.write(np.ascontiguousarray(bits).tobytes())
        os.replace(tmp, path)  # atomic: an interrupted write never leaves half a file under the name
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_masks_safetensors(path: str | os.PathLike) -> PackedMasks:
    """Read masks written by :func:`save_masks_safetensors`, one parameter at a time, as :class:`PackedMasks`.

    Raises
    ------
    MaskError
        No file at ``path``; not a safetensors file; no graphprune metadata; a newer format version; an entry
        whose size does not fit its shape.
    MissingDependencyError
        The ``safetensors`` package is not installed.
    """
    try:
        from safetensors import safe_open
    except ImportError:  # pragma: no cover - safetensors is a dependency
        raise MissingDependencyError("Reading safetensors masks needs the 'safetensors' package: "
                                     "pip install safetensors.") from None
    p = str(path)
    if not os.path.exists(p):
        raise MaskError(f"No mask file at {p!r}.")
    try:
        f = safe_open(p, framework="pt")
    except Exception as exc:
        raise MaskError(f"{p!r} is not a safetensors file: {exc}") from exc
    meta = f.metadata() or {}
    if meta.get("format") != SAFETENSORS_FORMAT:
        raise MaskError(f"{p!r} is a safetensors file but not a graphprune mask file (metadata 'format' is "
                        f"{meta.get('format')!r}, expected {SAFETENSORS_FORMAT!r}).")
    try:
        version = int(meta.get("version", ""))
        shapes = json.loads(meta["shapes"])
    except (KeyError, ValueError) as exc:
        raise MaskError(f"{p!r} has malformed graphprune metadata: {exc}") from exc
    if version > SAFETENSORS_VERSION:
        raise MaskError(f"{p!r} holds mask format version {version}; this graphprune reads up to "
                        f"{SAFETENSORS_VERSION}. Upgrade graphprune.")
    keys = list(f.keys())
    if set(keys) != set(shapes):
        raise MaskError(f"{p!r}: the entries and the metadata's shapes name different parameters.")
    bits = {}
    for k in keys:
        t = f.get_tensor(k)
        if t.dtype != torch.uint8 or t.dim() != 1:
            raise MaskError(f"{p!r}: entry {k!r} must be 1-D uint8 packed bits. Got {t.dtype}, {tuple(t.shape)}.")
        bits[k] = t.numpy()
    return PackedMasks.from_packed(bits, shapes)


# -- one entry point per direction ---------------------------------------------------------------------------------
FILE_FORMATS = ("auto", "safetensors", "torch")


def mask_file_format(path, format: str = "auto", *, reading: bool = False) -> str:
    """``"safetensors"`` or ``"torch"`` for ``path``: ``format`` itself unless ``"auto"``; then a name ending in
    ``.safetensors``, or (when reading an existing file) a safetensors header, means safetensors.

    The one decision :func:`graphprune.save_masks` / :func:`graphprune.load_masks` need to dispatch to
    :func:`save_masks_safetensors` / :func:`load_masks_safetensors` (no recursion through this module).
    """
    if format not in FILE_FORMATS:
        raise ParameterError(f"The 'format' parameter must be one of {FILE_FORMATS}. Got {format!r} instead.")
    if format != "auto":
        return format
    if str(path).endswith(".safetensors"):
        return "safetensors"
    if reading and os.path.exists(path):
        with open(path, "rb") as fh:
            head = fh.read(9)
        if len(head) == 9 and head[8:9] == b"{" and not head.startswith(b"PK"):
            return "safetensors"
    return "torch"
