"""A small trained Llama-style byte-level decoder language model for pruning studies.

The corpus is the English prose of CPython's ``pydoc_data.topics`` (the reference manual's help topics), which
ships with every CPython, so nothing is downloaded. Its text differs between Python versions, so the copy used
to train the committed model is stored in ``data/lm/corpus.txt.xz`` and checked against :data:`CORPUS_SHA256`.
The vocabulary is the 256 byte values; the first 90% of the bytes train, the last 10% are the held-out test split
(never used for training or calibration).

The trained weights live in ``data/lm/tiny_llama.safetensors`` so that tests and studies never retrain. Regenerate
them with ``python -m graphprune.experiments.lm train``; print the dense held-out perplexity with
``python -m graphprune.experiments.lm eval``.

torch is imported at module level; transformers and safetensors only when a model is built, saved or loaded.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import math
import os
import sys
import time
from pathlib import Path

import torch

from ..errors import ParameterError

__all__ = ["CORPUS_PATH", "CORPUS_SHA256", "DEFAULT_PATH", "TRAIN_FRACTION", "build_corpus", "write_corpus",
           "corpus", "splits", "lm_config", "train_lm", "save_lm", "load_lm", "perplexity", "calibration_batches",
           "main"]

DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "lm"
#: The committed, xz-compressed corpus.
CORPUS_PATH = DATA_DIR / "corpus.txt.xz"
#: sha256 of the uncompressed corpus bytes (built from CPython 3.11.2's ``pydoc_data.topics``).
CORPUS_SHA256 = "fb4334883057993f014a213560d19e3641598c066bb6e03cd713e8b23324a301"
#: The committed trained weights.
DEFAULT_PATH = DATA_DIR / "tiny_llama.safetensors"
#: Fraction of the corpus (leading bytes) that forms the train split; the rest is the held-out test split.
TRAIN_FRACTION = 0.9

_REGENERATE = "python -m graphprune.experiments.lm train"


def _generator(seed) -> torch.Generator:
    """A CPU ``torch.Generator`` from an int seed or an existing generator (never the global RNG)."""
    if isinstance(seed, torch.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ParameterError(f"The 'seed' parameter must be a non-negative int or a torch.Generator. Got {seed!r} "
                             "instead.")
    return torch.Generator().manual_seed(seed)


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ParameterError(f"The '{name}' parameter must be a positive int. Got {value!r} instead.")
    return value


def build_corpus() -> bytes:
    """Build the corpus from this interpreter's ``pydoc_data.topics``.

    Returns
    -------
    bytes
        ``"\\n\\n".join(topics[k] for k in sorted(topics))`` encoded as UTF-8 (non-ASCII characters stay as their
        UTF-8 bytes; the model's vocabulary is the 256 byte values).

    Notes
    -----
    The text changes between Python versions; the committed copy (:func:`corpus`) was built once with CPython
    3.11.2 by :func:`write_corpus`. Use :func:`corpus` everywhere else.

    Examples
    --------
    >>> text = build_corpus()
    >>> len(text) > 100_000
    True
    """
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics)).encode("utf-8")


def write_corpus(path=CORPUS_PATH) -> str:
    """Write :func:`build_corpus` xz-compressed to ``path`` (atomically) and return its sha256.

    Parameters
    ----------
    path : str or pathlib.Path, default :data:`CORPUS_PATH`
        Destination of the ``.xz`` file.

    Returns
    -------
    str
        The sha256 hex digest of the uncompressed corpus. It matches :data:`CORPUS_SHA256` only under the Python
        version that built the committed copy.
    """
    data = build_corpus()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(lzma.compress(data, format=lzma.FORMAT_XZ, preset=9 | lzma.PRESET_EXTREME))
    os.replace(tmp, path)
    return hashlib.sha256(data).hexdigest()


def corpus(path=CORPUS_PATH) -> bytes:
    """The committed corpus, decompressed and checked against :data:`CORPUS_SHA256`.

    Parameters
    ----------
    path : str or pathlib.Path, default :data:`CORPUS_PATH`
        The ``.xz`` file.

    Returns
    -------
    bytes
        The UTF-8 corpus (about 467 KB).

    Raises
    ------
    ParameterError
        If the file is missing, is not valid xz, or its content does not have the expected sha256.

    Examples
    --------
    >>> hashlib.sha256(corpus()).hexdigest() == CORPUS_SHA256
    True
    """
    path = Path(path)
    if not path.is_file():
        raise ParameterError(f"The LM corpus '{path}' is missing. It is committed with the repository; rebuild it "
                             "with: python -m graphprune.experiments.lm corpus (the text, and so the checksum, "
                             "depends on the Python version).")
    try:
        data = lzma.decompress(path.read_bytes())
    except lzma.LZMAError as exc:
        raise ParameterError(f"The LM corpus '{path}' is not a valid xz file: {exc}.") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != CORPUS_SHA256:
        raise ParameterError(f"The LM corpus '{path}' has sha256 {digest}, expected {CORPUS_SHA256}. Restore the "
                             "committed file with: git checkout -- data/lm/corpus.txt.xz")
    return data


def splits(path=CORPUS_PATH) -> tuple[torch.Tensor, torch.Tensor]:
    """The train and held-out test splits as byte ids.

    Parameters
    ----------
    path : str or pathlib.Path, default :data:`CORPUS_PATH`
        The ``.xz`` corpus, read by :func:`corpus`.

    Returns
    -------
    train, test : torch.LongTensor
        1-D tensors of byte values in ``[0, 256)``: the first ``int(TRAIN_FRACTION * n)`` bytes and the rest.

    Examples
    --------
    >>> train, test = splits()
    >>> train.dtype, len(train) > 8 * len(test)
    (torch.int64, True)
    """
    data = corpus(path)
    ids = torch.frombuffer(bytearray(data), dtype=torch.uint8).long()
    cut = int(TRAIN_FRACTION * len(ids))
    return ids[:cut].clone(), ids[cut:].clone()


def lm_config(**overrides):
    """The committed model's ``transformers.LlamaConfig`` (grouped-query attention, byte vocabulary).

    Parameters
    ----------
    **overrides
        Fields to change, e.g. ``hidden_size=32`` for a tiny test model. :func:`load_lm` always uses the
        defaults.

    Returns
    -------
    transformers.LlamaConfig
        vocab 256, hidden 192, 4 layers, 4 query heads sharing 2 key/value heads (head dim 48), SwiGLU width 512,
        context 256, untied input and output embeddings, RMSNorm eps 1e-5, no dropout, no biases.

    Examples
    --------
    >>> cfg = lm_config()
    >>> cfg.num_attention_heads // cfg.num_key_value_heads
    2
    """
    from transformers import LlamaConfig

    fields = dict(vocab_size=256, hidden_size=192, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, intermediate_size=512, max_position_embeddings=256,
                  tie_word_embeddings=False, rms_norm_eps=1e-5, attention_dropout=0.0, attention_bias=False,
                  mlp_bias=False, hidden_act="silu", initializer_range=0.02, rope_theta=10000.0,
                  bos_token_id=None, eos_token_id=None, pad_token_id=None, use_cache=False)
    fields.update(overrides)
    return LlamaConfig(**fields)


def _build(config, seed):
    """A fresh ``LlamaForCausalLM``, initialised from ``seed`` without touching the global RNG."""
    from transformers import LlamaForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.float()


def _windows(tokens, starts, seq_len):
    return torch.stack([tokens[s:s + seq_len] for s in starts.tolist()])


def _next_token_loss(model, x):
    """Mean next-token cross-entropy (float32) over every predicted position of the batch ``x``."""
    logits = model(input_ids=x).logits[:, :-1].float()
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))


def train_lm(seed=0, steps=2200, seq_len=128, batch_size=16, lr=3e-3, *, warmup=100, weight_decay=1.0,
             min_lr_ratio=0.1, clip=1.0, ema=0.995, config=None, progress=True):
    """Train the byte-level Llama on random windows of the train split.

    Parameters
    ----------
    seed : int or torch.Generator, default 0
        Seeds both the initialisation (``torch.manual_seed`` inside ``torch.random.fork_rng``) and a separate
        ``torch.Generator`` that draws the windows. The global RNG is never advanced.
    steps : int, default 2200
        Optimiser steps.
    seq_len : int, default 128
        Window length; each window predicts its ``seq_len - 1`` next bytes.
    batch_size : int, default 16
        Windows per step.
    lr : float, default 3e-3
        Peak learning rate of AdamW (betas 0.9, 0.95).
    warmup : int, default 100
        Linear warm-up steps, then cosine decay to ``min_lr_ratio * lr`` at ``steps``.
    weight_decay : float, default 1.0
        Decoupled weight decay on matrices (embeddings and projections), none on RMSNorm weights.
    min_lr_ratio : float, default 0.1
        Final learning rate as a fraction of ``lr``.
    clip : float, default 1.0
        Gradient norm clipping.
    ema : float or None, default 0.995
        Decay of an exponential moving average of the weights (Polyak averaging), which the returned model
        holds; ``None`` or 0 returns the last iterate.
    config : transformers.LlamaConfig, optional
        Defaults to :func:`lm_config`.
    progress : bool, default True
        Print the loss to stderr every 100 steps.

    Returns
    -------
    transformers.LlamaForCausalLM
        The trained model (its weight average when ``ema`` is set), float32, in eval mode.

    Raises
    ------
    ParameterError
        If ``seed``, ``steps``, ``seq_len``, ``batch_size`` or ``ema`` is invalid or ``seq_len`` exceeds the
        context.

    Notes
    -----
    Deterministic for a seed on CPU with a fixed number of threads. The committed model was trained with the
    defaults and ``torch.set_num_threads(1)``; see ``data/lm/README.md``.
    """
    for name, value in (("steps", steps), ("seq_len", seq_len), ("batch_size", batch_size)):
        _positive_int(name, value)
    if ema is not None and not 0 <= ema < 1:
        raise ParameterError(f"The 'ema' parameter must be None or in [0, 1). Got {ema!r} instead.")
    gen = _generator(seed)
    init_seed = seed if isinstance(seed, int) else int(torch.randint(0, 2**62, (1,), generator=gen))
    config = config or lm_config()
    if seq_len < 2 or seq_len > config.max_position_embeddings:
        raise ParameterError(f"The 'seq_len' parameter must be in [2, {config.max_position_embeddings}]. Got "
                             f"{seq_len} instead.")
    train, _ = splits()
    model = _build(config, init_seed)
    model.train()
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95))

    def factor(step):
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(steps - warmup, 1)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    params = list(model.parameters())
    averaged = [p.detach().clone() for p in params] if ema else None
    high = len(train) - seq_len + 1
    t0, running = time.perf_counter(), None
    for step in range(steps):
        x = _windows(train, torch.randint(0, high, (batch_size,), generator=gen), seq_len)
        loss = _next_token_loss(model, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        sched.step()
        if averaged is not None:
            with torch.no_grad():
                for a, p in zip(averaged, params):
                    a.lerp_(p, 1 - ema)
        value = float(loss.detach())
        running = value if running is None else 0.98 * running + 0.02 * value
        if progress and ((step + 1) % 100 == 0 or step + 1 == steps):
            print(f"step {step + 1}/{steps}  loss {running:.4f}  ppl {math.exp(running):.3f}  "
                  f"lr {sched.get_last_lr()[0]:.2e}  {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
    if averaged is not None:
        with torch.no_grad():
            for a, p in zip(averaged, params):
                p.copy_(a)
    return model.eval()


def save_lm(model, path=DEFAULT_PATH, *, metadata=None) -> Path:
    """Write ``model``'s float32 weights to a safetensors file, atomically (temporary file + ``os.replace``).

    Parameters
    ----------
    model : transformers.LlamaForCausalLM
        The model to save.
    path : str or pathlib.Path, default :data:`DEFAULT_PATH`
        Destination.
    metadata : dict of str to str, optional
        Extra safetensors metadata (training settings, perplexity); the model config is always stored as
        ``"config"`` (JSON).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {"format": "pt", "config": json.dumps(model.config.to_diff_dict(), sort_keys=True)}
    meta.update({str(k): str(v) for k, v in (metadata or {}).items()})
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return path


def load_lm(path=DEFAULT_PATH):
    """Load the committed trained model.

    Parameters
    ----------
    path : str or pathlib.Path, default :data:`DEFAULT_PATH`
        A safetensors file written by :func:`save_lm` for :func:`lm_config`.

    Returns
    -------
    transformers.LlamaForCausalLM
        Built from :func:`lm_config`, float32, on the CPU, in eval mode.

    Raises
    ------
    ParameterError
        If ``path`` does not exist (the message names the command that regenerates it) or its tensors do not
        fit :func:`lm_config`.

    Notes
    -----
    Does not touch the global RNG.

    Examples
    --------
    >>> model = load_lm()
    >>> model.training, next(model.parameters()).dtype
    (False, torch.float32)
    """
    path = Path(path)
    if not path.is_file():
        raise ParameterError(f"No trained LM weights at '{path}'. Regenerate them (about 12 minutes on one CPU "
                             f"core) with: {_REGENERATE}")
    from safetensors.torch import load_file

    state = load_file(str(path))
    model = _build(lm_config(), 0)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ParameterError(f"The weights in '{path}' do not fit lm_config(): {exc}. Regenerate them with: "
                             f"{_REGENERATE}") from None
    return model.eval()


def perplexity(model, tokens, *, seq_len=128, batch_size=16) -> float:
    """Perplexity per byte of ``model`` on ``tokens``.

    Parameters
    ----------
    model : transformers.LlamaForCausalLM
        Any causal LM returning ``.logits``; run on its own device, in eval mode for the call.
    tokens : torch.LongTensor
        1-D byte ids, e.g. the test split of :func:`splits`.
    seq_len : int, default 128
        Length of the non-overlapping windows ``tokens[i*seq_len:(i+1)*seq_len]``; the remainder is dropped.
    batch_size : int, default 16
        Windows per forward pass (does not change the result beyond float rounding).

    Returns
    -------
    float
        ``exp`` of the mean next-token cross-entropy over all ``seq_len - 1`` predicted positions of every window.

    Raises
    ------
    ParameterError
        If ``tokens`` is not 1-D or holds fewer than ``seq_len`` ids, or ``seq_len < 2``.

    Notes
    -----
    Runs under ``torch.no_grad()``; the model's training flag is restored afterwards. Logits are upcast to
    float32 before the softmax.

    Examples
    --------
    >>> model = load_lm()
    >>> _, test = splits()
    >>> perplexity(model, test[:1024]) < 4
    True
    """
    _positive_int("seq_len", seq_len)
    _positive_int("batch_size", batch_size)
    tokens = torch.as_tensor(tokens)
    if seq_len < 2:
        raise ParameterError(f"The 'seq_len' parameter must be at least 2. Got {seq_len} instead.")
    if tokens.ndim != 1 or len(tokens) < seq_len:
        raise ParameterError(f"The 'tokens' parameter must be a 1-D tensor of at least seq_len={seq_len} ids. Got "
                             f"shape {tuple(tokens.shape)} instead.")
    device = next(model.parameters()).device
    windows = tokens[: len(tokens) // seq_len * seq_len].long().view(-1, seq_len)
    was = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        with torch.no_grad():
            for i in range(0, len(windows), batch_size):
                x = windows[i:i + batch_size].to(device)
                logits = model(input_ids=x).logits[:, :-1].float()
                nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                        x[:, 1:].reshape(-1), reduction="sum")
                total += float(nll)
                count += x[:, 1:].numel()
    finally:
        model.train(was)
    return math.exp(total / count)


def calibration_batches(n=32, seq_len=128, seed=0) -> torch.Tensor:
    """Random windows of the train split, for calibration-based pruning.

    Parameters
    ----------
    n : int, default 32
        Number of windows.
    seq_len : int, default 128
        Window length.
    seed : int or torch.Generator, default 0
        Draws the window starts from a ``torch.Generator`` (never the global RNG); same seed, same batch.

    Returns
    -------
    torch.LongTensor
        Shape ``(n, seq_len)``; every window lies wholly inside the train split, never the test split.

    Examples
    --------
    >>> calibration_batches(4, 16, seed=1).shape
    torch.Size([4, 16])
    """
    _positive_int("n", n)
    _positive_int("seq_len", seq_len)
    gen = _generator(seed)
    train, _ = splits()
    if seq_len > len(train):
        raise ParameterError(f"The 'seq_len' parameter must be at most {len(train)}. Got {seq_len} instead.")
    return _windows(train, torch.randint(0, len(train) - seq_len + 1, (n,), generator=gen), seq_len)


def main(argv=None) -> int:
    """Command line: ``train``, ``eval`` or ``corpus`` (see ``--help``)."""
    import inspect

    defaults = {k: v.default for k, v in inspect.signature(train_lm).parameters.items()}
    parser = argparse.ArgumentParser(prog="python -m graphprune.experiments.lm", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="train and save the model, then print the dense held-out perplexity")
    tr.add_argument("--steps", type=int, default=defaults["steps"])
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--batch-size", type=int, default=defaults["batch_size"])
    tr.add_argument("--lr", type=float, default=defaults["lr"])
    tr.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    tr.add_argument("--out", type=Path, default=DEFAULT_PATH)
    ev = sub.add_parser("eval", help="print the dense held-out perplexity per byte of the saved model")
    ev.add_argument("--path", type=Path, default=DEFAULT_PATH)
    co = sub.add_parser("corpus", help="rebuild the xz corpus from this Python's pydoc_data and print its sha256")
    co.add_argument("--out", type=Path, default=CORPUS_PATH)
    args = parser.parse_args(argv)
    if args.command == "corpus":
        print(write_corpus(args.out))
        return 0
    if args.command == "train":
        torch.set_num_threads(args.threads)
        t0 = time.perf_counter()
        model = train_lm(seed=args.seed, steps=args.steps, batch_size=args.batch_size, lr=args.lr)
        seconds = time.perf_counter() - t0
        ppl = perplexity(model, splits()[1])
        settings = {k: defaults[k] for k in ("seq_len", "warmup", "weight_decay", "min_lr_ratio", "clip", "ema")}
        save_lm(model, args.out, metadata={"seed": args.seed, "steps": args.steps, "batch_size": args.batch_size,
                                           "lr": args.lr, **settings, "threads": args.threads,
                                           "train_seconds": f"{seconds:.0f}", "test_ppl": f"{ppl:.4f}",
                                           "corpus_sha256": CORPUS_SHA256, "torch": torch.__version__})
        print(f"trained in {seconds:.0f} s; saved {args.out}; dense held-out perplexity per byte {ppl:.4f}")
        return 0
    model = load_lm(args.path)
    print(f"dense held-out perplexity per byte {perplexity(model, splits()[1]):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
