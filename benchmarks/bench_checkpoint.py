"""Checkpoint to checkpoint: a Llama-2-7B-shaped safetensors checkpoint pruned into a new one on this machine.

The checkpoint is generated here (random init: normal(0, 0.02) weights, unit norms, bfloat16; Hugging Face names,
config.json and a sharded index; tensor by tensor, so generating it needs one tensor of memory) and kept in
``--workdir`` for later runs. Each row runs in a fresh process, so its peak RSS (``ru_maxrss``) is its own:

- ``graphprune spectral (default)``: ``graphprune.prune_checkpoint(src, dst, sparsity=0.5)``, the default method
  from disk (the architecture on the meta device, one parameter and one block's working set at a time);
- ``graphprune magnitude``: the same path with magnitude scores;
- ``graphprune spectral, Ray 2 workers`` (``--rows spectral-ray``): the default with ``executor="ray"`` on a
  local Ray cluster of 2 CPUs; each worker reads its shard and writes the pruned one; the peak is the driver's;
- ``graphprune magnitude, Ray 2 workers`` (``--rows magnitude-ray``): the same with magnitude scores (the driver's
  peak does not depend on the method; this row is the quick way to measure it on the full model);
- ``graphprune wanda (mapped)`` (``--rows wanda``): a data-aware method (4 x 128 random tokens of calibration)
  on the mapped route: the whole model over memory-mapped copies of the shards. Its peak RSS counts the file pages
  it maps (page cache the kernel can evict), so the table also gives the peak of anonymous memory (``RssAnon``);
- ``torch l1_unstructured, per shard``: the plain-PyTorch route done as frugally as it goes: each shard loaded
  with ``safetensors.torch.load_file``, ``torch.nn.utils.prune.l1_unstructured(amount=0.5)`` +
  ``prune.remove`` on every 2-D weight, the shard saved with ``save_file`` (no graph, no budgets: the floor).

Targets (issue 20, 2-core machine): Llama-2-7B shapes (32 layers, 13.5 GB) in under 15 minutes with peak RSS at
most 3 GB plus the largest shard.

    .venv/bin/python benchmarks/bench_checkpoint.py --layers 2          # a 2-layer model (1.1 GB)
    .venv/bin/python benchmarks/bench_checkpoint.py                     # all 32 layers (13.5 GB on disk)
"""

import argparse
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import time

import torch

SHAPES = dict(vocab=32000, hidden=4096, ff=11008, heads=32)


def tensors(layers, vocab, hidden, ff):
    """(name, shape) of a Llama checkpoint in save order."""
    yield "model.embed_tokens.weight", (vocab, hidden)
    for i in range(layers):
        p = f"model.layers.{i}."
        for n in ("q", "k", "v", "o"):
            yield p + f"self_attn.{n}_proj.weight", (hidden, hidden)
        yield p + "mlp.gate_proj.weight", (ff, hidden)
        yield p + "mlp.up_proj.weight", (ff, hidden)
        yield p + "mlp.down_proj.weight", (hidden, ff)
        yield p + "input_layernorm.weight", (hidden,)
        yield p + "post_attention_layernorm.weight", (hidden,)
    yield "model.norm.weight", (hidden,)
    yield "lm_head.weight", (vocab, hidden)


def generate(path, layers, shard_bytes, seed=0, **shape):
    """Write the checkpoint (config.json, shards, index), one tensor in memory at a time."""
    import transformers as T

    os.makedirs(path, exist_ok=True)
    T.LlamaConfig(vocab_size=shape["vocab"], hidden_size=shape["hidden"], intermediate_size=shape["ff"],
                  num_hidden_layers=layers, num_attention_heads=shape["heads"], num_key_value_heads=shape["heads"],
                  tie_word_embeddings=False, dtype="bfloat16").save_pretrained(path)
    items = list(tensors(layers, shape["vocab"], shape["hidden"], shape["ff"]))
    groups, cur, size = [], [], 0
    for name, shp in items:
        n = 2 * int(torch.tensor(shp).prod())
        if cur and size + n > shard_bytes:
            groups.append(cur)
            cur, size = [], 0
        cur.append((name, shp))
        size += n
    groups.append(cur)
    g = torch.Generator().manual_seed(seed)
    weight_map, total = {}, 0
    for i, group in enumerate(groups):
        fname = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        header, off = {}, 0
        for name, shp in group:
            n = 2 * int(torch.tensor(shp).prod())
            header[name] = {"dtype": "BF16", "shape": list(shp), "data_offsets": [off, off + n]}
            off += n
            weight_map[name] = fname
        header["__metadata__"] = {"format": "pt"}
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        with open(os.path.join(path, fname + ".tmp"), "wb") as f:
            f.write(struct.pack("<Q", len(raw)))
            f.write(raw)
            for _name, shp in group:
                t = torch.ones(shp, dtype=torch.bfloat16) if len(shp) == 1 else \
                    torch.empty(shp, dtype=torch.bfloat16).normal_(0.0, 0.02, generator=g)
                f.write(memoryview(t.view(torch.uint8).numpy()))
                total += t.numel() * 2
                del t
        os.replace(os.path.join(path, fname + ".tmp"), os.path.join(path, fname))
    with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    return total


class AnonPeak:
    """The peak of the process's anonymous memory (RssAnon: not the file pages it maps), sampled every 50 ms."""

    def __init__(self):
        import threading

        self.peak, self.stop = 0.0, threading.Event()
        self.thread = threading.Thread(target=self.poll, daemon=True)

    def poll(self):
        while not self.stop.wait(0.05):
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("RssAnon"):
                        self.peak = max(self.peak, int(line.split()[1]) / 1024)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def row(kind, src, dst):
    """One measurement, in this (fresh) process: prints a JSON line with the wall time and peak RSS."""
    if os.path.exists(dst):
        shutil.rmtree(dst)
    anon = AnonPeak().__enter__()
    t = time.perf_counter()
    if kind == "wanda":  # the mapped route: the whole model over memory-mapped copies of the shards
        import graphprune

        ids = torch.randint(0, SHAPES["vocab"], (4, 128), generator=torch.Generator().manual_seed(0))
        table = graphprune.prune_checkpoint(src, dst, "wanda", sparsity=0.5, calibration=ids, progress=False)
        sparsity = float(1 - table.kept.sum() / table.total.sum())
        lo, hi = float(table.sparsity.min()), float(table.sparsity.max())
    elif kind in ("spectral", "magnitude", "spectral-ray", "magnitude-ray"):
        import graphprune

        executor = None
        if kind.endswith("-ray"):
            import ray

            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            executor = "ray"
            t = time.perf_counter()  # the cluster's start-up is not the pruning's
        table = graphprune.prune_checkpoint(src, dst, kind.split("-")[0], sparsity=0.5, seed=0, progress=False,
                                            executor=executor)
        sparsity = float(1 - table.kept.sum() / table.total.sum())
        lo, hi = float(table.sparsity.min()), float(table.sparsity.max())
    else:
        from safetensors.torch import load_file, save_file
        from torch import nn
        from torch.nn.utils import prune as torch_prune

        os.makedirs(dst)
        kept = total = 0
        for name in sorted(os.listdir(src)):
            if not name.endswith(".safetensors"):
                shutil.copyfile(os.path.join(src, name), os.path.join(dst, name))
                continue
            state = load_file(os.path.join(src, name))
            for k, w in state.items():
                if w.dim() == 2:
                    holder = nn.Module()
                    holder.weight = nn.Parameter(w, requires_grad=False)
                    torch_prune.l1_unstructured(holder, "weight", amount=0.5)
                    torch_prune.remove(holder, "weight")
                    state[k] = holder.weight.data
                    kept += int((state[k] != 0).sum())
                    total += w.numel()
                    del holder
            save_file(state, os.path.join(dst, name), metadata={"format": "pt"})
            del state
        sparsity, lo, hi = 1 - kept / total, float("nan"), float("nan")
    dt = time.perf_counter() - t
    anon.__exit__()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB
    print(json.dumps(dict(kind=kind, seconds=dt, peak_mib=peak, anon_mib=anon.peak, sparsity=sparsity, lo=lo,
                          hi=hi)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--shard-gb", type=float, default=5.0, help="largest shard size in GB (default 5)")
    ap.add_argument("--workdir", default="/tmp/graphprune-bench-checkpoint")
    ap.add_argument("--rows", default="spectral,magnitude,torch")
    ap.add_argument("--row", help=argparse.SUPPRESS)
    ap.add_argument("--src", help=argparse.SUPPRESS)
    ap.add_argument("--dst", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.row:
        return row(args.row, args.src, args.dst)

    src = os.path.join(args.workdir, f"llama7b-shaped-{args.layers}layers")
    if not os.path.exists(os.path.join(src, "model.safetensors.index.json")):
        t = time.perf_counter()
        nbytes = generate(src, args.layers, int(args.shard_gb * 1e9), **SHAPES)
        print(f"generated {src}: {nbytes / 2**30:.2f} GiB in {time.perf_counter() - t:.0f} s")
    shards = [n for n in os.listdir(src) if n.endswith(".safetensors")]
    nbytes = sum(os.path.getsize(os.path.join(src, n)) for n in shards)
    largest = max(os.path.getsize(os.path.join(src, n)) for n in shards)
    print(f"torch {torch.__version__}, {os.cpu_count()} cores; Llama-2-7B shapes, {args.layers} layers, bfloat16, "
          f"{nbytes / 2**30:.2f} GiB in {len(shards)} shards (largest {largest / 2**30:.2f} GiB); sparsity 0.5, "
          "one run per row, each in a fresh process")
    results = []
    for kind in args.rows.split(","):
        dst = os.path.join(args.workdir, f"out-{kind}")
        out = subprocess.run([sys.executable, __file__, "--row", kind, "--src", src, "--dst", dst],
                             capture_output=True, text=True)
        if out.returncode:
            print(f"{kind}: failed\n{out.stderr[-2000:]}")
            continue
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        shutil.rmtree(dst, ignore_errors=True)
    names = {"spectral": "graphprune spectral (default)", "magnitude": "graphprune magnitude",
             "spectral-ray": "graphprune spectral, Ray 2 workers",
             "magnitude-ray": "graphprune magnitude, Ray 2 workers", "wanda": "graphprune wanda (mapped)",
             "torch": "torch l1_unstructured, per shard"}
    budget = 3 * 1024 + largest / 2**20
    print(f"\n{'method':<34} {'time s':>8} {'peak RSS MiB':>13} {'anon MiB':>9} {'sparsity':>9} "
          f"{'per parameter':>15}  target")
    for r in results:
        target = ""
        if r["kind"].endswith("-ray"):
            target = f"{'ok' if r['peak_mib'] < 1024 else 'MISS'}: driver < 1024 MiB"
        if r["kind"] == "spectral" and args.layers == 32:
            ok = r["seconds"] < 900 and r["peak_mib"] <= budget
            target = f"{'ok' if ok else 'MISS'}: < 900 s, <= {budget:.0f} MiB (3 GiB + largest shard)"
        print(f"{names[r['kind']]:<34} {r['seconds']:8.1f} {r['peak_mib']:13.0f} {r['anon_mib']:9.0f} "
              f"{r['sparsity']:9.4f} {r['lo']:6.3f}-{r['hi']:6.3f}  {target}")


if __name__ == "__main__":
    main()
