"""Compact masks (bit-packed per parameter) and mask files: the one module that reads and writes them.

A bool mask costs one byte per weight (about 6.7 GB for a 7B-parameter model). :class:`PackedMasks` keeps eight
weights per byte and expands one parameter to a bool tensor only when it is read. The safetensors format (the
Hugging Face convention: a JSON header then raw bytes, nothing executed on load) stores one ``uint8`` entry of
packed bits per parameter, with the shapes and a format version in the header's metadata; files are written and
read one parameter at a time. :func:`save_masks` / :func:`load_masks` (also ``graphprune.save_masks`` and
``graphprune.apply.save_masks``) write either format, the torch.save one by default.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Iterator, Mapping

import numpy as np
import torch

from . import _validation
from ._validation import Options, PathLike, check_mask, check_mask_key, check_param
from .errors import MaskError, MissingDependencyError, ParameterError

__all__ = ["PackedMasks", "pack_mask", "unpack_mask", "save_masks_safetensors", "load_masks_safetensors",
           "mask_file_format", "mask_table", "sparsity_summary", "param_kind", "SAFETENSORS_FORMAT",
           "SAFETENSORS_VERSION", "save_masks", "load_masks"]

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

    def table(self):
        """Per-parameter sparsities as a pandas DataFrame (:func:`mask_table`), from the stored counts: nothing is
        unpacked.

        Examples
        --------
        >>> import torch
        >>> pm = PackedMasks({"mlp.up.weight": torch.tensor([[True, False], [False, False]])})
        >>> pm.table()[["parameter", "kind", "kept", "total", "sparsity"]].to_dict("records")
        [{'parameter': 'mlp.up.weight', 'kind': 'mlp', 'kept': 1, 'total': 4, 'sparsity': 0.75}]
        """
        return mask_table(self)


# -- per-parameter sparsities --------------------------------------------------------------------------------------
_KIND_WORDS = (  # the first kind whose words appear in a parameter's name, segment by segment
    ("embedding", ("embed", "embeddings", "embed_tokens", "wte", "wpe", "tok_embeddings", "word_embeddings")),
    ("attention", ("attn", "self_attn", "attention", "self_attention", "cross_attn", "q_proj", "k_proj", "v_proj",
                   "o_proj", "qkv", "c_attn", "in_proj_weight", "out_proj", "query", "key", "value", "wq", "wk",
                   "wv", "wo")),
    ("mlp", ("mlp", "ffn", "feed_forward", "feedforward", "intermediate", "gate_proj", "up_proj", "down_proj",
             "c_fc", "fc1", "fc2", "w1", "w2", "w3", "linear1", "linear2", "dense_h_to_4h", "dense_4h_to_h")),
    ("head", ("lm_head", "head", "heads", "classifier")),
)


def param_kind(name: str, shape=()) -> str:
    """The kind of a parameter for per-kind summaries: ``"embedding"``, ``"attention"``, ``"mlp"``, ``"head"`` by
    its name (segments such as ``self_attn``, ``q_proj``, ``mlp``, ``up_proj``, ``embed_tokens``, ``lm_head``;
    PyTorch, Hugging Face and GPT-2 spellings), else ``"conv"`` for a parameter of 3 or more dimensions and
    ``"linear"`` otherwise. A naming rule, not a graph analysis: a model with other names gets linear / conv.

    Examples
    --------
    >>> param_kind("model.layers.0.self_attn.q_proj.weight"), param_kind("model.layers.0.mlp.up_proj.weight")
    ('attention', 'mlp')
    >>> param_kind("features.0.weight", (64, 3, 3, 3)), param_kind("lm_head.weight", (32000, 4096))
    ('conv', 'head')
    """
    segments = [seg.lower() for seg in str(name).split(".")]
    for kind, words in _KIND_WORDS:
        if any(seg in words for seg in segments):
            return kind
    if any("attn" in seg or "attention" in seg for seg in segments):  # spellings not listed above
        return "attention"
    if any("mlp" in seg or "ffn" in seg for seg in segments):
        return "mlp"
    return "conv" if len(tuple(shape)) >= 3 else "linear"


def mask_table(masks):
    """Per-parameter sparsities of masks as a pandas DataFrame.

    Parameters
    ----------
    masks : PackedMasks or mapping of str to bool tensor
        What :func:`graphprune.prune` or :func:`graphprune.sparsify` returned (or any such mapping).

    Returns
    -------
    pandas.DataFrame
        One row per parameter, in the mapping's order: ``parameter``, ``kind`` (:func:`param_kind`), ``shape``
        (tuple), ``kept`` and ``total`` (ints), ``sparsity`` (``1 - kept / total``).

    Raises
    ------
    MaskError
        ``masks`` is not a mapping of names to bool tensors.

    Examples
    --------
    >>> import torch
    >>> t = mask_table({"0.weight": torch.tensor([[True, True], [False, True]])})
    >>> t.loc[0, "kept"], t.loc[0, "total"], t.loc[0, "sparsity"]
    (3, 4, 0.25)
    """
    import pandas as pd

    if not isinstance(masks, Mapping):
        raise MaskError(f"The 'masks' parameter must be a dict of parameter name -> bool tensor or a PackedMasks. "
                        f"Got {type(masks).__name__} instead.")
    rows = []
    for name in masks:
        if isinstance(masks, PackedMasks):
            shape, kept = masks.shape(name), masks._kept[name]
        else:
            m = masks[name]
            if not isinstance(m, torch.Tensor) or m.dtype != torch.bool:
                raise MaskError(f"Mask for {name!r} must be a torch.bool tensor. Got "
                                f"{getattr(m, 'dtype', type(m).__name__)}.")
            shape, kept = tuple(m.shape), int(np.count_nonzero(m.detach().to("cpu").numpy()))
        total = int(math.prod(shape))
        rows.append({"parameter": name, "kind": param_kind(name, shape), "shape": tuple(shape), "kept": kept,
                     "total": total, "sparsity": 1.0 - kept / total if total else 0.0})
    cols = ["parameter", "kind", "shape", "kept", "total", "sparsity"]
    return pd.DataFrame(rows, columns=cols)


def sparsity_summary(masks) -> str:
    """One line: overall sparsity, the least and most pruned parameters, and the sparsity of each kind
    (:func:`param_kind`), e.g. ``"sparsity 0.5000 over 6,738,415,616 weights in 226 parameters; per parameter
    0.3187 (model.layers.0.self_attn.q_proj.weight) to 0.5318 (model.layers.0.mlp.up_proj.weight); by kind:
    attention 0.3187, mlp 0.5318, ..."``.

    Examples
    --------
    >>> import torch
    >>> line = sparsity_summary({"attn.q.weight": torch.tensor([True, False]),
    ...                          "mlp.up.weight": torch.tensor([False, False, False, True])})
    >>> print(line.replace("; ", ";\\n"))
    sparsity 0.6667 over 6 weights in 2 parameters;
    per parameter 0.5000 (attn.q.weight) to 0.7500 (mlp.up.weight);
    by kind: attention 0.5000, mlp 0.7500
    """
    return table_summary(mask_table(masks))


def table_summary(t) -> str:
    """:func:`sparsity_summary` of a table with :func:`mask_table`'s columns (``parameter``, ``kind``, ``kept``,
    ``total``, ``sparsity``), such as :func:`graphprune.prune_checkpoint` returns."""
    if t.empty:
        return "no parameters"
    kept, total = int(t["kept"].sum()), int(t["total"].sum())
    lo, hi = t.loc[t["sparsity"].idxmin()], t.loc[t["sparsity"].idxmax()]
    by = t.groupby("kind", sort=False)[["kept", "total"]].sum()
    kinds = ", ".join(f"{k} {1 - r.kept / r.total:.4f}" for k, r in by.iterrows() if r.total)
    return (f"sparsity {1 - kept / total:.4f} over {total:,} weights in {len(t)} parameters; per parameter "
            f"{lo.sparsity:.4f} ({lo.parameter}) to {hi.sparsity:.4f} ({hi.parameter}); by kind: {kinds}")


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
FILE_FORMATS = _validation.MASK_FILE_FORMATS


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


# -- the public pair: either format ------------------------------------------------------------------------------
TORCH_FORMAT = "graphprune-masks"
TORCH_VERSION = 1


def save_masks(masks: Mapping, path: str | os.PathLike, *, format: str = "auto") -> None:
    """Save masks to ``path``: the torch.save format (loads with ``torch.load(weights_only=True)``) or safetensors.

    Parameters
    ----------
    masks : mapping of str to torch.Tensor
        Bool tensors keyed by parameter name (anything else raises MaskError: convert with ``mask.bool()``);
        a :class:`graphprune.masks.PackedMasks` too.
    path : str or os.PathLike
        The file; its folder must exist.
    format : {"auto", "torch", "safetensors"}, default "auto"
        ``"auto"``: safetensors when the name ends in ``.safetensors`` (one bit-packed entry per parameter,
        written one at a time, format and version in the metadata; the Hugging Face convention, safe by
        construction), else torch.save.
    """
    check_param("path", path, [PathLike()], "save_masks")
    check_param("format", format, [Options(FILE_FORMATS)], "save_masks")
    if not isinstance(masks, Mapping):
        raise MaskError("The 'masks' parameter of save_masks must be a dict of parameter name -> bool tensor. "
                        f"Got {type(masks).__name__} instead.")
    packed = isinstance(masks, PackedMasks)
    out = {}
    for k in masks:
        check_mask_key(k, "save_masks")
        if packed:
            continue  # bit-packed bool masks by construction; not expanded here
        v = masks[k]
        out[k] = check_mask(k, v, tuple(v.shape) if isinstance(v, torch.Tensor) else (), owner="save_masks")
        out[k] = out[k].detach().to("cpu")
    folder = os.path.dirname(os.fspath(path))
    if folder and not os.path.isdir(folder):
        raise ParameterError(f"The 'path' parameter of save_masks names a folder that does not exist: "
                             f"{folder!r}. Create it first (os.makedirs).")
    if mask_file_format(path, format) == "safetensors":
        return save_masks_safetensors(masks if packed else out, path)
    if packed:
        out = {k: masks[k] for k in masks}
    payload = {"format": TORCH_FORMAT, "version": TORCH_VERSION, "masks": out}
    tmp = os.fspath(path) + ".tmp"
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)  # atomic: an interrupted write never leaves half a file under the name
    except OSError as exc:
        raise ParameterError(f"The 'path' parameter of save_masks: cannot write {os.fspath(path)!r} "
                             f"({exc.strerror or exc}).") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_masks(path: str | os.PathLike, *, format: str = "auto"):
    """Load masks written by :func:`save_masks`.

    A torch.save file is read with ``torch.load(weights_only=True)`` (no code runs) and its structure is checked:
    the ``format`` and ``version`` entries, a ``masks`` dict with str keys and bool tensors. A plain dict of str
    to bool tensors (an older or hand-made file) also loads. A safetensors file (by name or header, or
    ``format="safetensors"``) gives a :class:`graphprune.masks.PackedMasks`, read per parameter.

    Raises
    ------
    MaskError
        The file is missing, unreadable, or not a mask file; the message names what is wrong.
    """
    check_param("path", path, [PathLike()], "load_masks")
    check_param("format", format, [Options(FILE_FORMATS)], "load_masks")
    where = repr(os.fspath(path))
    if not os.path.isfile(path):
        raise MaskError(f"No mask file at {where}.")
    if mask_file_format(path, format, reading=True) == "safetensors":
        return load_masks_safetensors(path)
    try:
        data = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one MaskError
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise MaskError(f"{where} is not a mask file readable with torch.load(weights_only=True): {first}") \
            from None
    if not isinstance(data, dict):
        raise MaskError(f"{where} holds a {type(data).__name__}, not a mask file (a dict with 'format', 'version' "
                        "and 'masks', as written by save_masks).")
    if "format" in data or "version" in data or "masks" in data:
        if data.get("format") != TORCH_FORMAT:
            raise MaskError(f"{where} has format {data.get('format')!r}; expected {TORCH_FORMAT!r}.")
        if data.get("version") != TORCH_VERSION:
            raise MaskError(f"{where} has version {data.get('version')!r}; this graphprune reads version "
                            f"{TORCH_VERSION}.")
        if "masks" not in data:
            raise MaskError(f"{where} has no 'masks' entry.")
        data = data["masks"]
        if not isinstance(data, dict):
            raise MaskError(f"{where}: its 'masks' entry is a {type(data).__name__}, not a dict.")
    out = {}
    for k, v in data.items():
        if not isinstance(k, str):
            raise MaskError(f"{where}: mask keys must be parameter names (str). Found the key {k!r} "
                            f"({type(k).__name__}).")
        if not isinstance(v, torch.Tensor) or v.dtype != torch.bool:
            got = v.dtype if isinstance(v, torch.Tensor) else type(v).__name__
            raise MaskError(f"{where}: the mask for {k!r} must be a bool tensor. Found {got}.")
        out[k] = v
    return out
