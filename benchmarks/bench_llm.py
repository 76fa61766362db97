"""A Llama-2-7B-shaped model pruned in place on one machine: graphprune.prune(..., permanent=True) against
torch.nn.utils.prune.l1_unstructured.

The model is written with plain torch modules (token embedding, 32 pre-norm decoder layers of hidden 4096 with
32-head attention and a SwiGLU MLP of 11008, a final RMSNorm and a 32000-token output head; no rotary embedding,
which holds no weights), random init, bfloat16, built on the meta device and materialised directly in bfloat16
(no float32 copy). Rows:

- ``graphprune spectral width=all permanent``: export + the paper's per-layer spectral masks (float32 exact
  resistances unless ``--dtype float64``, per block) + in-place zeroing, block by block
  (``graphprune.prune(model, ids, "spectral", sparsity=0.5, permanent=True, dtype=torch.float32, width="all")``);
- ``graphprune spectral (default) permanent``: the same with ``"spectral"``'s default (``width="auto"``: at 50%
  no node is removed, so ERK budgets and an edge cover, then the same sampling, streamed block by block);
- ``graphprune magnitude permanent``: the same streaming path with magnitude scores (quick mode only);
- ``torch l1_unstructured``: ``torch.nn.utils.prune.l1_unstructured(amount=0.5)`` on every Linear and the
  embedding of a freshly built model (the peer; it keeps ``weight_orig`` and a mask per weight).

Peak RSS is the process's high-water mark during the row, minus the RSS before it (the model is built before).
``cpu s`` is the process's CPU time during the row (all its threads): the work done, which a busy machine does
not inflate as it does the wall time (on an idle machine the wall time lies between ``cpu s / threads`` and
``cpu s``).
Targets (2-core machine): full model < 15 min and peak <= model bytes + 3 GB; quick mode (4 layers) < 2.5 min.

    .venv/bin/python benchmarks/bench_llm.py --quick        # 4 of the 32 layers
    .venv/bin/python benchmarks/bench_llm.py                # all 32 layers (needs about 17 GB free)
    .venv/bin/python benchmarks/bench_llm.py --layers 1 --hidden 2048 --ff 5504 --vocab 8000 --no-peer \
        --no-magnitude                                      # the two spectral variants on a scaled-down layer
"""

import argparse
import gc
import os
import sys
import time

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _measure import hwm_mb, rss_mb, rss_reset  # noqa: E402

import graphprune  # noqa: E402


class Attention(nn.Module):
    """Multi-head self-attention written plainly (q, k, v, o projections without bias)."""

    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.o_proj = nn.Linear(d, d, bias=False)

    def forward(self, x):
        B, T, D = x.shape
        h = self.heads
        q = self.q_proj(x).view(B, T, h, D // h).transpose(1, 2)
        k = self.k_proj(x).view(B, T, h, D // h).transpose(1, 2)
        v = self.v_proj(x).view(B, T, h, D // h).transpose(1, 2)
        a = torch.softmax(q @ k.transpose(-1, -2) / (D // h) ** 0.5, dim=-1)
        return self.o_proj((a @ v).transpose(1, 2).reshape(B, T, D))


class SwiGLU(nn.Module):
    def __init__(self, d, ff):
        super().__init__()
        self.gate_proj = nn.Linear(d, ff, bias=False)
        self.up_proj = nn.Linear(d, ff, bias=False)
        self.down_proj = nn.Linear(ff, d, bias=False)

    def forward(self, x):
        return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, d, heads, ff):
        super().__init__()
        self.input_layernorm = nn.RMSNorm(d, eps=1e-5)
        self.self_attn = Attention(d, heads)
        self.post_attention_layernorm = nn.RMSNorm(d, eps=1e-5)
        self.mlp = SwiGLU(d, ff)

    def forward(self, x):
        x = x + self.self_attn(self.input_layernorm(x))
        return x + self.mlp(self.post_attention_layernorm(x))


class Llama(nn.Module):
    """Llama-2-7B shapes: vocab 32000, hidden 4096, 32 layers, 32 heads, MLP 11008 (6.74e9 parameters)."""

    def __init__(self, vocab=32000, d=4096, layers=32, heads=32, ff=11008):
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList(DecoderLayer(d, heads, ff) for _ in range(layers))
        self.norm = nn.RMSNorm(d, eps=1e-5)
        self.lm_head = nn.Linear(d, vocab, bias=False)

    def forward(self, ids):
        x = self.embed_tokens(ids)
        for layer in self.layers:
            x = layer(x)
        return self.lm_head(self.norm(x))


def build(layers, seed=0, **shape):
    """The model in bfloat16, built on the meta device and materialised in place (never a float32 copy)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("meta"):
            model = Llama(layers=layers, **shape)
    finally:
        torch.set_default_dtype(old)
    model.to_empty(device="cpu")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=g)
    return model.eval()


def weight_bytes(model):
    return sum(p.numel() * p.element_size() for p in model.parameters())


def row(label, fn):
    gc.collect()
    base = rss_mb()
    rss_reset()
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    dt = time.perf_counter() - t
    row.cpu[label] = time.process_time() - c  # CPU seconds of this process: the work, whatever the machine's load
    return label, dt, max(hwm_mb() - base, 0.0), out


row.cpu = {}


class EngineClock:
    """Time spent inside the exact engine (graphprune.resistance.bipartite_resistance) during a row: the floor
    that the per-block overhead is measured against."""

    def __init__(self):
        import graphprune.resistance as res

        self.res, self.inner, self.seconds = res, res.bipartite_resistance, 0.0

    def __enter__(self):
        def timed(*a, **k):
            t = time.perf_counter()
            try:
                return self.inner(*a, **k)
            finally:
                self.seconds += time.perf_counter() - t

        self.res.bipartite_resistance = timed
        return self

    def __exit__(self, *exc):
        self.res.bipartite_resistance = self.inner


def l1_peer(model):
    for mod in model.modules():
        if isinstance(mod, (nn.Linear, nn.Embedding)):
            torch_prune.l1_unstructured(mod, "weight", amount=0.5)
    return model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="4 of the 32 decoder layers")
    ap.add_argument("--layers", type=int, default=None)
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--no-magnitude", action="store_true")
    ap.add_argument("--width", default="all,auto", help="spectral variants to run, comma-separated (all, auto)")
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"),
                    help="resistances' dtype for the spectral rows (float64 is the CPU default of prune())")
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--ff", type=int, default=11008)
    ap.add_argument("--vocab", type=int, default=32000)
    args = ap.parse_args()
    shape = dict(d=args.hidden, ff=args.ff, vocab=args.vocab, heads=32)
    layers = args.layers or (4 if args.quick else 32)
    ids = torch.randint(0, args.vocab, (1, 8), generator=torch.Generator().manual_seed(1))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, Llama shapes {shape}, {layers} layers, "
          f"bfloat16, sparsity 0.5, one run per row")
    results = []
    dtype = getattr(torch, args.dtype)
    print(f"spectral rows: resistances in {args.dtype}")

    for width in args.width.split(","):
        t0 = time.perf_counter()
        model = build(layers, **shape)
        nbytes = weight_bytes(model)
        nparams = sum(p.numel() for p in model.parameters())
        print(f"model: {nparams:,} parameters, {nbytes / 2**30:.2f} GiB, built in {time.perf_counter() - t0:.1f} s, "
              f"RSS {rss_mb():.0f} MiB")
        name = "graphprune spectral width=all permanent" if width == "all" else \
            "graphprune spectral (default) permanent"
        with EngineClock() as clock:
            label, dt, peak, masks = row(name, lambda model=model, width=width: graphprune.prune(
                model, ids, "spectral", sparsity=0.5, seed=0, permanent=True, progress=False, dtype=dtype,
                width=width))
        dens = sum(int((p != 0).sum()) for n, p in model.named_parameters() if p.dim() >= 2) / sum(
            p.numel() for p in model.parameters() if p.dim() >= 2)
        table = masks.table()
        kinds = table.groupby("kind")[["kept", "total"]].sum()
        by_kind = ", ".join(f"{k} {1 - r.kept / r.total:.2f}" for k, r in kinds.iterrows())
        results.append((label, dt, peak, f"density {dens:.4f} (sparsity by kind: {by_kind}), masks "
                                         f"{masks.nbytes / 2**20:.0f} MiB packed, exact engine {clock.seconds:.1f} s "
                                         "of it"))
        del masks, model
        gc.collect()

    if not args.no_magnitude:
        model = build(layers, **shape)
        label, dt, peak, masks = row("graphprune magnitude permanent", lambda: graphprune.prune(
            model, ids, "magnitude", sparsity=0.5, seed=0, permanent=True, progress=False))
        results.append((label, dt, peak, f"masks {masks.nbytes / 2**20:.0f} MiB packed"))
        del masks, model
        gc.collect()

    if not args.no_peer:
        model = build(layers, **shape)
        label, dt, peak, _ = row("torch l1_unstructured", lambda: l1_peer(model))
        results.append((label, dt, peak, "keeps weight_orig + mask"))
        del model
        gc.collect()

    peer = next((r[1] for r in results if r[0].startswith("torch")), float("nan"))
    target_t = 150 if layers == 4 else 900
    print(f"\n{'method':<40} {'time s':>8} {'cpu s':>8} {'peak extra MiB':>15} {'vs model':>9} {'vs peer':>8}  note")
    for label, dt, peak, note in results:
        ok = ""
        if label.startswith("graphprune spectral") and layers in (4, 32):
            ok = " [" + ("ok" if dt < target_t and peak <= 3 * 1024 else "MISS") + f": <{target_t}s, <=3 GiB extra]"
        print(f"{label:<40} {dt:8.1f} {row.cpu[label]:8.1f} {peak:15.0f} {peak * 2**20 / nbytes:8.2f}x "
              f"{dt / peer:7.1f}x  {note}{ok}")
    print(f"model weights: {nbytes / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
