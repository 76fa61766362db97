"""Checkpoint to checkpoint: prune a model stored as (sharded) safetensors without loading it.

:func:`prune_checkpoint` builds the architecture on the meta device (no weight in memory), exports its graph from
the shapes alone, plans the sparsifier (budgets and one seed stream per block, exactly as
:func:`graphprune.prune` does) and then goes shard by shard: the shard file is copied under a temporary name, each
pruned parameter is read from it, its blocks' masks are computed and the pruned weights are zeroed in the file's
own bytes, and the file is renamed into place. A pruned shard therefore has the source's header, tensor order and
metadata byte for byte; only the zeroed weights differ. Memory is one parameter and one block's working set at a
time, whatever the model's size.

The output directory appears under its final name only when every shard is written (the work goes into
``<dst>.partial``, renamed at the end); an interrupted run resumes from the last finished shard. With an
``executor`` each shard is one job: the worker reads its blocks from the shard and writes the pruned shard itself,
so no weight travels between machines (they must see the same file system).

Safetensors layout (https://github.com/huggingface/safetensors): an 8-byte little-endian header length, a JSON
header mapping each tensor to its dtype, shape and ``data_offsets`` (relative to the end of the header), then the
data, little-endian and C-contiguous.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import struct

import numpy as np
import torch
from torch import nn

from .errors import CheckpointError, GraphPruneError, MissingDependencyError, ParameterError
from .layout import param_rows

__all__ = ["prune_checkpoint", "CheckpointError"]

log = logging.getLogger("graphprune")

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
PROGRESS = ".graphprune-progress.json"

#: safetensors dtype names of the floating types a pruned parameter may have.
_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
#: ... and of every type a tensor of the model may have.
_ALL_DTYPES = {**_DTYPES, "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
               "U8": torch.uint8, "BOOL": torch.bool}


# -- reading a checkpoint --------------------------------------------------------------------------------------------
def read_header(path: str) -> tuple[dict, int]:
    """``(header, data_start)`` of a safetensors file: the JSON header (tensor name -> dtype, shape, data_offsets;
    ``__metadata__``) and the byte offset where the data starts. CheckpointError if it is not a safetensors file."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise ValueError("shorter than 8 bytes")
            (n,) = struct.unpack("<Q", raw)
            if n > size - 8 or n > 100_000_000:
                raise ValueError(f"header length {n} does not fit the file of {size} bytes")
            header = json.loads(f.read(n))
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        for name, e in header.items():
            if name == "__metadata__":
                continue
            begin, end = e["data_offsets"]
            if not (0 <= begin <= end <= size - 8 - n):
                raise ValueError(f"tensor {name!r} has data_offsets {e['data_offsets']} beyond the file")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc}). Re-download or re-save the "
                              "shard.") from None
    return header, 8 + n


class Checkpoint:
    """A checkpoint directory: its shards, their headers, and where each tensor lives.

    Parameters
    ----------
    path : str
        A directory with ``model.safetensors``, or ``model.safetensors.index.json`` and the shards it names.
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        if not os.path.isdir(self.path):
            raise CheckpointError(f"The 'src' checkpoint {self.path!r} is not a directory. Give the directory "
                                  f"holding {SINGLE} or {INDEX} (and config.json).")
        index = os.path.join(self.path, INDEX)
        if os.path.exists(index):
            try:
                with open(index) as f:
                    wm = json.load(f)["weight_map"]
                if not isinstance(wm, dict) or not all(isinstance(v, str) for v in wm.values()):
                    raise TypeError("weight_map is not a mapping of tensor names to file names")
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise CheckpointError(f"The index {index} is not a valid safetensors index ({exc}): it must be a "
                                      "JSON object with a 'weight_map' of tensor name -> shard file.") from None
            self.shards = sorted(set(wm.values()))
            self.index_file = INDEX
        elif os.path.exists(os.path.join(self.path, SINGLE)):
            wm, self.shards, self.index_file = None, [SINGLE], None
        else:
            raise CheckpointError(f"The 'src' checkpoint {self.path!r} has neither {INDEX} nor {SINGLE}: only "
                                  "safetensors checkpoints are read (save with save_pretrained(..., "
                                  "safe_serialization=True)).")
        bad = [s for s in self.shards if os.path.basename(s) != s or not os.path.isfile(os.path.join(self.path, s))]
        if bad:
            raise CheckpointError(f"The checkpoint {self.path!r} is missing {len(bad)} shard(s) named by its index: "
                                  f"{', '.join(bad[:5])}. Complete the download (every shard of {INDEX}).")
        self.headers, self.data_start, self.where = {}, {}, {}
        for s in self.shards:
            header, start = read_header(os.path.join(self.path, s))
            self.headers[s], self.data_start[s] = header, start
            for name in header:
                if name != "__metadata__":
                    self.where[name] = s
        if wm is not None:
            for name, s in wm.items():
                if self.where.get(name) != s:
                    raise CheckpointError(f"The index {INDEX} of {self.path!r} puts {name!r} in {s}, but that "
                                          "shard does not hold it. The index and the shards are from different "
                                          "saves: re-download the checkpoint.")

    def entry(self, name) -> dict:
        return self.headers[self.where[name]][name]

    def shape(self, name) -> tuple:
        return tuple(self.entry(name)["shape"])

    def fingerprint(self) -> dict:
        """What identifies the source (shard names, sizes and modification times), for resuming."""
        out = {}
        for s in self.shards:
            st = os.stat(os.path.join(self.path, s))
            out[s] = [st.st_size, st.st_mtime_ns]
        return out


def _meta_model(src):
    """The architecture of a Hugging Face model directory, from its config.json: parameters on the meta device,
    buffers computed on the CPU (:func:`params_on_meta`)."""
    try:
        import transformers
    except ImportError:
        raise MissingDependencyError("prune_checkpoint builds the model from config.json with transformers: pip "
                                     "install 'graphprune[hf]', or pass model= (the architecture).") from None
    if not os.path.exists(os.path.join(src, "config.json")):
        raise CheckpointError(f"The checkpoint {src!r} has no config.json to build the architecture from. Pass "
                              "model= (an nn.Module of the architecture, on the meta device) instead.")
    try:
        config = transformers.AutoConfig.from_pretrained(src)
    except Exception as exc:  # noqa: BLE001 - any failure of the config is one clear error
        raise CheckpointError(f"config.json of {src!r} cannot be read by transformers: {exc}") from None
    names = getattr(config, "architectures", None) or []
    cls = next((getattr(transformers, n) for n in names if hasattr(transformers, n)), None)
    with params_on_meta():
        if cls is not None:
            return cls._from_config(config)
        return transformers.AutoModelForCausalLM.from_config(config)


@contextlib.contextmanager
def params_on_meta():
    """Inside the block, every parameter a module registers goes to the meta device as it is registered (its
    initialisation then costs nothing), while buffers stay where they are built: computed ones, such as rotary
    frequencies, keep their values. The architecture of a large model in a second and a few MB."""
    register = nn.Module.register_parameter

    def on_meta(self, name, param):
        if param is not None and not param.is_meta:
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(self, name, param)

    nn.Module.register_parameter = on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def _aliases(model) -> dict:
    """Parameter name -> every name it has in the model (tied parameters have several)."""
    by_id, out = {}, {}
    for name, p in model.named_parameters(remove_duplicate=False):
        by_id.setdefault(id(p), []).append(name)
    for names in by_id.values():
        for n in names:
            out[n] = names
    return out


def _locate(ckpt, model) -> dict:
    """Parameter name -> its tensor name in the checkpoint (tied parameters may be stored under any of their
    names); CheckpointError naming the first missing or mismatched parameter."""
    aliases = _aliases(model)
    out = {}
    for name, p in model.named_parameters():
        key = next((a for a in aliases[name] if a in ckpt.where), None)
        if key is None:
            raise CheckpointError(f"The checkpoint {ckpt.path!r} has no tensor for the model's parameter {name!r} "
                                  f"(shape {tuple(p.shape)}). The config and the shards do not match: check the "
                                  "config.json, or pass the right model=.")
        if ckpt.shape(key) != tuple(p.shape):
            raise CheckpointError(f"The checkpoint's {key!r} has shape {ckpt.shape(key)}, but the model's parameter "
                                  f"{name!r} has shape {tuple(p.shape)}. The config and the shards do not match.")
        out[name] = key
    return out


# -- one shard's work (runs in any process) ---------------------------------------------------------------------------
def _read(f, start, entry) -> torch.Tensor:
    dtype = _ALL_DTYPES[entry["dtype"]]
    begin, end = entry["data_offsets"]
    buf = bytearray(end - begin)
    f.seek(start + begin)
    if f.readinto(buf) != len(buf):
        raise CheckpointError("a shard ended before its tensor's data")
    t = torch.frombuffer(buf, dtype=torch.uint8) if len(buf) else torch.zeros(0, dtype=torch.uint8)
    return t.view(dtype).reshape(entry["shape"])


def _write(f, start, entry, t: torch.Tensor) -> None:
    f.seek(start + entry["data_offsets"][0])
    f.write(memoryview(t.contiguous().view(torch.uint8).numpy()))


def _block(job, blk, w, kind, **extra):
    """:func:`graphprune.sparsify.jobs.block_job` on one block of a shard (``w``: its weight, read from the file)."""
    from .sparsify.jobs import block_job

    return block_job(dict(kind=kind, cls=job["cls"], params=job["params"], seed=blk["seed"], extra=extra,
                           block=dict(blk["block"], weight=w), shape=tuple(w.shape),
                           available=np.packbits(np.ones(w.numel(), dtype=bool))))


def _weights(f, job):
    """Yield ``(key, tensor, blocks)`` for every pruned parameter of the shard open in ``f``, read one at a time."""
    by_key = {}
    for blk in job["blocks"]:
        by_key.setdefault(blk["key"], []).append(blk)
    for key, blocks in by_key.items():
        t = _read(f, job["data_start"], job["entries"][key])
        if not bool(torch.isfinite(t.sum(dtype=torch.float32))) and not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"The checkpoint's {key!r} ({os.path.basename(job['src'])}) holds NaN or inf "
                                  "weights; fix the checkpoint before pruning.")
        yield key, t, blocks


def _rows(t, blk):
    return param_rows(t, blk["param_slice"])


def _score_job(job) -> list:
    """One round of ``allocation="global"`` over a shard, read only: per block, the histogram of its score keys
    (``kind="hist"``) or its count above the threshold's bin and the keys inside it (``kind="count"``)."""
    out = []
    with open(job["src"], "rb") as f:
        for _key, t, blocks in _weights(f, job):
            for blk in blocks:
                out.append((blk["block"]["name"], _block(job, blk, _rows(t, blk), job["kind"], **job["extra"])))
    return out


def _shard_job(job) -> dict:
    """Copy one shard to its temporary name, zero the pruned weights of its blocks in the copy's bytes, and rename
    it into place. Returns ``{parameter: kept}`` and the zero-block warnings ``[(block, k, available)]``."""
    if job.get("kind", "mask") != "mask":
        return _score_job(job)
    src, dst = job["src"], job["dst"]
    tmp = dst + ".tmp"
    shutil.copyfile(src, tmp)
    kept, zero_blocks = {}, []
    bar = _bar(job["blocks"], job["progress"], os.path.basename(src))
    with open(tmp, "r+b") as f:
        for key, t, blocks in _weights(f, job):
            full = torch.ones(t.shape, dtype=torch.bool)
            for blk in blocks:
                w = _rows(t, blk)
                bits, _scale, zero = _block(job, blk, w, "mask", k=blk["k"], use_global=job["use_global"])
                m = torch.from_numpy(np.unpackbits(bits, count=w.numel()).astype(bool)).reshape(w.shape)
                w.masked_fill_(~m, 0)
                _rows(full, blk).copy_(m)
                if zero:
                    zero_blocks.append((blk["block"]["name"], *zero))
                bar.update(1)
            _write(f, job["data_start"], job["entries"][key], t)
            kept[blocks[0]["param"]] = int(np.count_nonzero(full.numpy()))
            del t, full
        f.flush()
        os.fsync(f.fileno())
    bar.close()
    os.replace(tmp, dst)
    return {"kept": kept, "zero": zero_blocks}


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def _bar(blocks, enabled, desc):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=len(blocks), desc=desc, unit="block")


def _describe(job) -> str:
    return f"shard {os.path.basename(job['src'])!r}"


# -- the driver -------------------------------------------------------------------------------------------------------
def prune_checkpoint(src, dst, method=None, *, sparsity=None, density=None, seed=0, calibration=None, model=None,
                     example_inputs=None, executor=None, resume: bool = True, progress: bool = True, **options):
    """Prune a safetensors checkpoint into a new checkpoint directory, one shard at a time.

    Parameters
    ----------
    src : str or os.PathLike
        A Hugging Face model directory: ``config.json`` and ``model.safetensors``, or sharded safetensors with
        ``model.safetensors.index.json``. Read only.
    dst : str or os.PathLike
        The new directory; it must not exist. It receives the pruned shards (same names, headers and index), and a
        copy of every other file of ``src`` (config, tokenizer, generation config). ``from_pretrained(dst)`` loads
        it.
    method : str, Sparsifier subclass or instance, optional
        Default ``"spectral"``, or ``"flow"`` with ``calibration``. Two routes, the same result:

        - *block by block* (methods whose masks depend on one block at a time: magnitude, random, the spectral
          family while it removes no node, ...): shard jobs, resumable, on ``executor`` if given; any allocation
          (``"global"`` reads the shards twice more for its threshold);
        - *mapped* (data-aware methods, SNIP/GraSP/SynFlow, spectral budgets that remove nodes): the whole model
          runs over memory-mapped copies of the shards, so its weights live in the page cache (the operating
          system reads and evicts them as needed) and the method's writes go straight to the copies; flow's
          dense target maps the source read-only. In this process, and an interrupted run starts over.
    sparsity, density : float
        Exactly one: the fraction of prunable weights to remove, or to keep.
    seed : int, default 0
        The same seed gives the same masks as :func:`graphprune.prune` on the loaded model, byte for byte.
    calibration : tensor, dict of tensors or iterable of batches, optional
        Calibration inputs for a data-aware method, as for :func:`graphprune.prune`.
    model : torch.nn.Module, optional
        The architecture, ideally on the meta device (its values are never read); its parameter names must match
        the checkpoint's tensors; buffers that the checkpoint does not store (rotary frequencies) must hold their
        values. Never modified. Default: built from ``config.json`` by transformers with :func:`params_on_meta`.
    example_inputs : tensor, tuple or dict, optional
        Inputs for the shape-only export. Default: ``{"input_ids": zeros(1, 8)}`` (a language model).
    executor : None, "ray" or concurrent.futures.Executor, optional
        One job per shard; each worker reads its shard and writes the pruned shard itself (the workers must see
        ``src`` and ``dst``). The output is byte-identical whatever the executor.
    resume : bool, default True
        An earlier run interrupted on the same ``src``, ``dst`` and parameters left ``<dst>.partial``: its
        finished shards are kept and the run goes on from there. False starts over (the partial directory is
        removed).
    progress : bool, default True
        A bar over each shard's blocks.
    **options
        The sparsifier's constructor options (``allocation``, ``keep_dense``, ``dtype`` ...).

    Returns
    -------
    pandas.DataFrame
        One row per pruned parameter, with :func:`graphprune.masks.mask_table`'s columns and the ``shard``:
        ``parameter``, ``kind``, ``shard``, ``shape``, ``kept``, ``total``, ``sparsity``. A log line (logger
        ``"graphprune"``, INFO) summarises it by kind.

    Raises
    ------
    CheckpointError
        Missing shards, a bad index or header, tensors that do not match the architecture (all before anything
        is written), or ``dst`` already exists.
    ParameterError
        Bad method or options (a data-aware method without ``calibration``; ``executor`` with a method of the
        mapped route).

    Examples
    --------
    >>> import os, tempfile, torch, graphprune
    >>> from safetensors.torch import save_file
    >>> net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    >>> root = tempfile.mkdtemp()
    >>> os.mkdir(os.path.join(root, "src"))
    >>> save_file(dict(net.state_dict()), os.path.join(root, "src", "model.safetensors"))
    >>> table = graphprune.prune_checkpoint(os.path.join(root, "src"), os.path.join(root, "dst"), "magnitude",
    ...                                     sparsity=0.5, model=net, example_inputs=torch.zeros(1, 8),
    ...                                     progress=False)
    >>> table[["kept", "total"]].sum().tolist()
    [96, 192]
    """
    from .prune import DEFAULT_CALIBRATED_METHOD, DEFAULT_METHOD, _sparsifier, _with_calibration
    from .sparsify import resolve
    from .sparsify.calibrated import CalibratedSparsifier

    if not isinstance(resume, bool):
        raise ParameterError(f"The 'resume' parameter of prune_checkpoint must be True or False. Got {resume!r}.")
    src, dst = os.fspath(src), os.fspath(dst).rstrip(os.sep)
    if method is None:
        method = DEFAULT_METHOD if calibration is None else DEFAULT_CALIBRATED_METHOD
    ckpt = Checkpoint(src)
    if os.path.exists(dst):
        raise CheckpointError(f"The 'dst' directory {dst!r} already exists; prune_checkpoint writes a new "
                              "checkpoint. Choose another path or remove it.")
    parent = os.path.dirname(os.path.abspath(dst))
    if not os.path.isdir(parent):
        raise CheckpointError(f"The parent directory of 'dst' ({parent!r}) does not exist. Create it first.")
    if model is None:
        model = _meta_model(src)
    elif not isinstance(model, nn.Module):
        raise ParameterError(f"The 'model' parameter of prune_checkpoint must be a torch.nn.Module (the "
                             f"architecture). Got {type(model).__name__} instead.")
    keys = _locate(ckpt, model)
    if example_inputs is None:
        example_inputs = {"input_ids": torch.zeros(1, 8, dtype=torch.long)}
    if calibration is not None:
        options = _with_calibration(method, model, calibration, options)
    elif isinstance(method, (str, type)) and issubclass(resolve(method, owner="prune_checkpoint"),
                                                        CalibratedSparsifier):
        raise ParameterError(f"The method {method!r} of prune_checkpoint needs calibration data: pass "
                             "calibration=<model inputs> (token ids for a language model).")
    sp = _sparsifier(method, sparsity, density, seed, progress, options)
    d = sp.validate()
    G, ks = _plan_route(sp, d, model, example_inputs, executor)
    blockwise = ks is not None
    for b in sp.units(G):
        e = ckpt.entry(keys[b.param])
        if e["dtype"] not in _DTYPES and not sp.keeps_dense(b):
            raise CheckpointError(f"The checkpoint's {keys[b.param]!r} has dtype {e['dtype']}; pruned parameters "
                                  f"must be floating ({', '.join(_DTYPES)}). Keep it dense with "
                                  f"keep_dense=[{b.param!r}].")
    partial = dst + ".partial"
    if blockwise:
        kept = _prune_blocks(sp, G, d, ks, ckpt, keys, src, partial, executor, resume, progress)
    else:
        pruned = {b.param for b in sp.units(G) if not sp.keeps_dense(b)}
        kept = _prune_mapped(sp, model, example_inputs, ckpt, keys, partial, progress, pruned)
    for name in sorted(os.listdir(src)):  # config, tokenizer, generation config, the index: copied as they are
        path = os.path.join(src, name)
        if name in ckpt.shards or not os.path.isfile(path):
            continue
        shutil.copyfile(path, os.path.join(partial, name + ".tmp"))
        os.replace(os.path.join(partial, name + ".tmp"), os.path.join(partial, name))
    if os.path.exists(os.path.join(partial, PROGRESS)):
        os.remove(os.path.join(partial, PROGRESS))
    os.rename(partial, dst)  # the finished checkpoint appears under its name at once
    return _table(kept, ckpt, keys, src, dst, sp)


def _plan_route(sp, d, model, example_inputs, executor):
    """``(graph, budgets)``: the shape-only graph, and the per-block budgets when the method runs block by block
    from the shards; None when the whole model is mapped from the files (data-aware methods, methods that need
    the model or every weight up front)."""
    import copy

    from .export import _export
    from .sparsify.calibrated import CalibratedSparsifier

    shapes = copy.deepcopy(model).to("meta")  # parameters and buffers: shapes only (the model keeps its buffers)
    G = _export(shapes, example_inputs, (), False, True, "auto", {}, structure_only=True)
    units = sp.units(G)
    if not units:
        raise GraphPruneError("The model has no prunable (weight) block: nothing to prune.")
    sp._check_names(G, units)
    ks = None
    if not (isinstance(sp, CalibratedSparsifier) or "model" in sp._get_param_names()):
        try:
            sp.prepare(G)
            if sp._distributable():
                ks = sp.allocate(G, units, d)
        except GraphPruneError:
            raise
        except Exception:  # it reads weights up front (the meta graph has none): the mapped route
            ks = None
        finally:
            sp.release()
    if ks is None and executor is not None:
        raise ParameterError(f"{type(sp).__name__} with these options needs the whole model at once "
                             f"({sp._why_serial()}), so prune_checkpoint runs it in this process: drop executor=.")
    return G, ks


def _prune_blocks(sp, G, d, ks, ckpt, keys, src, partial, executor, resume, progress) -> dict:
    """The block-by-block route: shard jobs (resumable); returns shard -> {parameter: kept}."""
    from .sparsify.base import make_rng
    from .sparsify.units import _warn_zero_block, unit_seeds

    units = sp.units(G)
    seeds = unit_seeds(make_rng(sp.seed, owner=type(sp).__name__), units)
    todo = [b for b in units if not sp.keeps_dense(b)]
    params = {k: v for k, v in sp.get_params().items() if k not in ("executor", "progress")}
    glob = sp.allocation == "global"
    fingerprint = {"src": os.path.abspath(src), "shards": ckpt.fingerprint(), "method": type(sp).__name__,
                   "params": repr(sorted(params.items()))}
    done = _resume(partial, fingerprint, ckpt, resume)
    jobs = []
    for s in ckpt.shards:
        blocks = [b for b in todo if ckpt.where[keys[b.param]] == s]
        entries = {keys[b.param]: ckpt.entry(keys[b.param]) for b in blocks}
        jobs.append(dict(
            src=os.path.join(src, s), dst=os.path.join(partial, s), data_start=ckpt.data_start[s], entries=entries,
            cls=type(sp), params=params, progress=bool(sp.progress) and executor is None, use_global=glob,
            blocks=[dict(key=keys[b.param], param=b.param, param_slice=b.param_slice, k=int(ks[b.name]),
                         seed=seeds[b.name], block=dict(name=b.name, param=b.param, layout=b.layout,
                                                        groups=b.groups, n_src=b.n_src, n_dst=b.n_dst))
                    for b in blocks]))
    todo_jobs = [j for j in jobs if os.path.basename(j["dst"]) not in done]
    if glob and todo_jobs:  # one threshold over every block's scores: two read-only rounds over the shards first
        counts = _global_counts(jobs, todo, round(d * sum(b.num_edges for b in todo)), executor)
        for job in jobs:
            for blk in job["blocks"]:
                blk["k"] = counts[blk["block"]["name"]]
    os.makedirs(partial, exist_ok=True)
    _save_progress(partial, fingerprint, done)
    for s, result in _run(todo_jobs, executor, progress):
        done[s] = result["kept"]
        _save_progress(partial, fingerprint, done)
        for name, k, n in result["zero"]:
            _warn_zero_block(sp, next(b for b in todo if b.name == name), k, n)
    return done


def _table(kept, ckpt, keys, src, dst, sp):
    """One row per pruned parameter (in the checkpoint's order of shards) and one log line."""
    import pandas as pd

    from .masks import param_kind, table_summary

    rows = []
    for s in ckpt.shards:
        for param, k in kept.get(s, {}).items():
            shape = ckpt.shape(keys[param])
            total = int(np.prod(shape))
            rows.append(dict(parameter=param, kind=param_kind(param, shape), shard=s, shape=shape, kept=int(k),
                             total=total, sparsity=1.0 - k / total if total else 0.0))
    table = pd.DataFrame(rows, columns=["parameter", "kind", "shard", "shape", "kept", "total", "sparsity"])
    log.info("prune_checkpoint %s -> %s: %s, %s", src, dst, type(sp).__name__, table_summary(table))
    return table


# -- the mapped route: the whole model over memory-mapped copies of the shards ----------------------------------------
def _map_params(model, ckpt, keys, files: dict, *, writable: bool) -> list:
    """Make every parameter of ``model`` (on the meta device) a view of its bytes in ``files`` (shard -> path),
    memory-mapped: the weights live in the page cache, and writes (pruning, repairs) go to the file. Returns the
    open maps (to flush and close). Tied parameters stay one tensor."""
    import mmap

    maps, views = {}, {}
    for s, path in files.items():
        with open(path, "r+b" if writable else "rb") as f:
            maps[s] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_WRITE if writable else mmap.ACCESS_COPY)
    aliases = _aliases(model)
    for name in [n for n, _ in model.named_parameters()]:
        key = keys[name]
        s, e = ckpt.where[key], ckpt.entry(key)
        begin, end = e["data_offsets"]
        dtype = _ALL_DTYPES.get(e["dtype"])
        if dtype is None:
            raise CheckpointError(f"The checkpoint's {key!r} has dtype {e['dtype']}, which torch cannot map.")
        if (ckpt.data_start[s] + begin) % torch.empty(0, dtype=dtype).element_size() or end == begin:
            t = _read_file(files[s], ckpt.data_start[s], e)  # an unaligned (or empty) tensor: a copy in memory
        else:
            t = torch.frombuffer(maps[s], dtype=torch.uint8, count=end - begin, offset=ckpt.data_start[s] + begin)
            t = t.view(dtype).reshape(e["shape"])
        views[name] = nn.Parameter(t, requires_grad=False)
        for alias in aliases[name]:
            mod_name, _, attr = alias.rpartition(".")
            model.get_submodule(mod_name)._parameters[attr] = views[name]
    for name in [n for n, _ in model.named_buffers()]:  # persistent buffers in the checkpoint (BN statistics)
        if name in ckpt.where:
            mod_name, _, attr = name.rpartition(".")
            model.get_submodule(mod_name)._buffers[attr] = _read_file(files[ckpt.where[name]],
                                                                      ckpt.data_start[ckpt.where[name]],
                                                                      ckpt.entry(name))
    meta = [n for n, b in model.named_buffers() if b.is_meta]
    if meta:
        raise ParameterError(f"The 'model' of prune_checkpoint has buffers on the meta device ({', '.join(meta[:5])})"
                             ": they hold values the checkpoint does not store. Build the architecture with its "
                             "parameters on the meta device but its buffers on the CPU (the default builds it so "
                             "from config.json).")
    return list(maps.values())


def _read_file(path, start, entry):
    with open(path, "rb") as f:
        return _read(f, start, entry)


def _prune_mapped(sp, model, example_inputs, ckpt, keys, partial, progress, pruned) -> dict:
    """The whole-model route: graphprune.prune(..., permanent=True) on the model mapped over copies of the shards
    (its writes go to the copies), with the dense reference a read-only mapping of the source (flow). Not
    resumable: an interrupted run starts over."""
    import copy
    import gc

    from .prune import prune

    if os.path.exists(partial):
        shutil.rmtree(partial)  # the mapped route cannot resume: every shard may change until the end
    os.makedirs(partial)
    files = {}
    for s in ckpt.shards:
        files[s] = os.path.join(partial, s + ".tmp")
        shutil.copyfile(os.path.join(ckpt.path, s), files[s])
    work = copy.deepcopy(model)  # the caller's architecture stays as it was; meta parameters copy for free
    reference = copy.deepcopy(model)  # mapped over the source, read only: the dense model (flow's target)
    if "model" in sp._get_param_names():
        sp.model = work
    maps = _map_params(work, ckpt, keys, files, writable=True)
    maps += _map_params(reference, ckpt, keys, {s: os.path.join(ckpt.path, s) for s in ckpt.shards},
                        writable=False)
    sp._dense_reference = reference
    try:
        masks = prune(work, example_inputs, sp, permanent=True, progress=progress)
    finally:
        del sp._dense_reference
    kept = {}
    for name in masks:
        if name in pruned:
            kept.setdefault(ckpt.where[keys[name]], {})[name] = int(masks[name].sum())
    if "model" in sp._get_param_names():
        sp.model = model
    del masks, reference, work  # the views go before the maps close
    gc.collect()
    for mm in maps:
        mm.flush()
        try:
            mm.close()
        except BufferError:  # a view is still alive somewhere: the map closes with it
            pass
    for s, tmp in files.items():
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(partial, s))
    return kept


def _global_counts(jobs, todo, K, executor) -> dict:
    """Edges kept per block under one threshold over all blocks' scores, from two read-only rounds of shard jobs
    (:func:`graphprune.sparsify.allocation.global_counts`: per-block histograms of the scores' sort keys, then
    per-block counts above the threshold's bin and the keys inside it; ties to the earlier block in graph order)."""
    from .sparsify.allocation import global_counts

    index = {b.name: i for i, b in enumerate(todo)}  # graph order, as the in-memory threshold breaks ties

    def results(kind, extra):
        for _, result in _run([dict(job, kind=kind, extra=extra) for job in jobs], executor, False):
            for name, r in result:
                yield index[name], r

    return global_counts(list(index), K, lambda: results("hist", {}), lambda edge: results("count", {"edge": edge}))


def _run(jobs, executor, progress):
    """Yield ``(shard name, result)`` per shard job: in this process (every core) or on ``executor``."""
    if executor is None:
        for job in jobs:
            yield os.path.basename(job["dst"]), _shard_job(job)
        return
    from ._executor import run_jobs

    for i, result in run_jobs(_shard_job, jobs, executor=executor, describe=_describe, owner="prune_checkpoint"):
        yield os.path.basename(jobs[i]["dst"]), result


def _resume(partial, fingerprint, ckpt, resume) -> dict:
    """Finished shards of an earlier run into ``partial`` (shard -> kept per parameter), or {} (starting over)."""
    if not os.path.exists(partial):
        return {}
    if not resume:
        shutil.rmtree(partial)
        return {}
    try:
        with open(os.path.join(partial, PROGRESS)) as f:
            state = json.load(f)
    except (OSError, ValueError):
        state = None
    if not state or state.get("fingerprint") != fingerprint:
        raise CheckpointError(f"{partial!r} holds an earlier run of prune_checkpoint with another source or other "
                              "parameters. Remove it, or pass resume=False to start over.")
    done = {s: kept for s, kept in state["done"].items() if os.path.isfile(os.path.join(partial, s))}
    if done:
        log.info("prune_checkpoint resumes: %d of %d shards already written", len(done), len(ckpt.shards))
    return done


def _save_progress(partial, fingerprint, done) -> None:
    path = os.path.join(partial, PROGRESS)
    with open(path + ".tmp", "w") as f:
        json.dump({"fingerprint": fingerprint, "done": done}, f)
    os.replace(path + ".tmp", path)
