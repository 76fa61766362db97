"""Structured pruning (issue 21): latency and MACs before and after, coverage, accuracy at equal parameter counts.

Three sections (``--what latency,coverage,accuracy``), each printing a markdown table:

* **latency**: torchvision resnet18 (224 x 224) and a GPT-2-small-sized stack (Hugging Face ``GPT2Model``, the
  default ``GPT2Config``: 12 layers, d=768, 12 heads, MLP 3072; sequence 32; random init, nothing downloaded), dense
  and shrunk to about 2x fewer weights in the prunable layers: graphprune (``select_nodes`` with the leverage
  criterion, then ``shrink``) and Torch-Pruning (``MagnitudePruner``, its default magnitude importance, ratio
  bisected to the same weight count) in the same process. Median wall time of ``--runs`` forward passes (one
  warm-up; the models measured in turn, run by run), batch 1 and 32, ``torch.no_grad``, ``--threads`` threads;
  MACs counted with hooks on Linear / ConvNd /
  transformers' Conv1D (attention's matmuls left out). The speed-up is dense time / shrunk time.
* **coverage**: every model of ``tests/test_zoo.py`` and the torchvision classification zoo at random init:
  graphprune removes 30% of the groups of each layer (heads, neurons, channels; l2 criterion) and runs the shrunk
  model; if that is refused, neurons and channels only. Torch-Pruning prunes 30% with ``MagnitudePruner`` and runs
  its model. "equal" is the largest difference to the masked model (graphprune only).
* **lm**: the committed trained byte-level Llama of ``graphprune.experiments.lm`` (GQA 4/2): held-out perplexity
  per byte with no fine-tune, 2x and 4x fewer weights in its decoder layers (MLP neurons and query heads within
  their key/value group), graphprune's criteria (weights only, and data-aware with 16 x 128 training bytes of
  calibration: edge weights ``|w| ||X||``) and Torch-Pruning.
* **accuracy**: the study's MNIST-1D CNN (``cnn``, trained with the study's schedule and cached like the study's
  post arm), 2x and 4x fewer weights in its prunable layers, no fine-tune and after the post arm's fine-tune (5
  epochs, Adam 1e-3): graphprune leverage, l2 (Torch-Pruning's default importance written here), random, the
  data-aware leverage and l2 (256 training samples of calibration), and Torch-Pruning's own ``MagnitudePruner``
  at the same weight count.

Timings depend on the machine and its load: compare rows of one run only. On a loaded machine use ``--threads 1``:
with more threads than free cores, every op waits on its thread barrier (GPT-2 small at batch 1 measured 3.3 s
with 2 threads and 0.25 s with 1 on the 2-core machine at load 9).

    .venv/bin/python benchmarks/bench_structured.py --what latency --runs 5
    .venv/bin/python benchmarks/bench_structured.py --what coverage
    .venv/bin/python benchmarks/bench_structured.py --what accuracy

Torch-Pruning is the ``bench`` extra (``pip install -e .[bench]``); without it its columns say "not installed".
"""

import argparse
import copy
import os
import signal
import sys
import time
import traceback
import warnings

import numpy as np
import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

import graphprune  # noqa: E402
from graphprune.structured import amount_for, node_groups, select_nodes, shrink  # noqa: E402
from graphprune.structured.summary import interleaved_latency  # noqa: E402

try:
    import torch_pruning as tp
except ImportError:  # the bench extra
    tp = None


#: Time limit of one Torch-Pruning run (its dependency tracing never ends on some Hugging Face models here).
TP_SECONDS = 60


# -- measurements ----------------------------------------------------------------------------------------------------
def macs(model, inputs):
    """Multiply-accumulates of one forward pass: graphprune.structured.count_macs (Linear, ConvNd, transformers'
    Conv1D and nn.MultiheadAttention's projections, which never run as modules; tested against hand counts)."""
    return sum(graphprune.structured.count_macs(model, inputs).values())


def _forward(model, inputs):
    with torch.no_grad():
        return model(**inputs) if isinstance(inputs, dict) else model(inputs)


def latencies(models, inputs, runs):
    """Median forward time of each model in eval mode, interleaved (graphprune.structured.summary's)."""
    for m in models:
        m.eval()
    return interleaved_latency(models, inputs, runs)


def weights(model):
    """Weight elements of the prunable layer types (each parameter once)."""
    seen, n = set(), 0
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd, nn.Embedding)) or type(m).__name__ == "Conv1D":
            if id(m.weight) not in seen:
                seen.add(id(m.weight))
                n += m.weight.numel()
        elif isinstance(m, nn.MultiheadAttention) and m.in_proj_weight is not None:  # packed q, k, v
            seen.add(id(m.in_proj_weight))
            n += m.in_proj_weight.numel()
    return n


# -- the two pruners ---------------------------------------------------------------------------------------------------
def graphprune_shrink(model, x, *, ratio=None, amount=None, criterion="leverage", kinds=("neuron", "channel", "head"),
                      prunable=None, seed=0, hf_config="ignore", round_to=1, calibration=None):
    """Shrink a copy of ``model``: ``amount`` of every layer's groups, or the amount that keeps ``1/ratio`` of the
    weights of the layers ``prunable`` names (all weights by default); data-aware scores with ``calibration``.
    Returns (model, seconds, amount)."""
    m = copy.deepcopy(model).eval()
    t = time.perf_counter()
    G = graphprune.from_model(m, x)
    groups = node_groups(G)
    opts = dict(criterion=criterion, kinds=kinds, groups=groups, seed=seed, round_to=round_to)
    data = {} if calibration is None else dict(model=m, calibration=calibration)
    scores = graphprune.structured.node_scores(G, criterion, groups=groups, seed=seed, kinds=kinds, **data)
    opts["scores"] = scores
    if amount is None:
        if prunable is None:
            amount, keep = amount_for(G, ratio, **opts)
        else:
            amount, keep = _amount_for_layers(G, ratio, prunable, opts)
    else:
        keep = select_nodes(G, amount, **opts)
    shrink(m, G, keep, example_inputs=x, hf_config=hf_config)
    return m, time.perf_counter() - t, amount


def _amount_for_layers(G, ratio, prunable, opts):
    """Bisection on the amount: the weights of the parameters whose name passes ``prunable`` fall to 1/ratio."""
    params = [p for p in G.params if prunable(p)]

    def kept(keep):
        total = 0
        for b in G.weight_blocks:
            if b.param in params:
                s = int(keep[b.src].sum()) if b.src in keep else b.n_src
                d = int(keep[b.dst].sum()) if b.dst in keep else b.n_dst
                if b.layout in ("conv", "conv_transpose") and b.groups > 1:
                    total += (d if b.layout == "conv" else s) * b.weight.shape[1] * b.kernel_size
                else:
                    total += s * d * b.kernel_size
        return total

    base = kept({})
    lo, hi = 0.0, 0.95
    for _ in range(16):
        mid = (lo + hi) / 2
        if kept(select_nodes(G, mid, **opts)) > base / ratio:
            lo = mid
        else:
            hi = mid
    return hi, select_nodes(G, hi, **opts)


class _TimeLimit:
    """Raise TimeoutError in the main thread after ``seconds`` (SIGALRM; a peer that runs too long is a result)."""

    def __init__(self, seconds):
        self.seconds = seconds

    def _raise(self, *_):
        raise TimeoutError(f"over {self.seconds} s")

    def __enter__(self):
        self.old = signal.signal(signal.SIGALRM, self._raise)
        signal.alarm(self.seconds)

    def __exit__(self, *exc):
        signal.alarm(0)
        signal.signal(signal.SIGALRM, self.old)
        return False


def _first_tensor(out):
    """Torch-Pruning's ``output_transform`` for models returning tuples or Hugging Face ModelOutputs."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict):
        out = list(out.values())
    return next(t for t in (_first_tensor(o) for o in out if o is not None) if t is not None)


def tp_prune(model, x, ratio_or_target, *, ignored=(), target_weights=None):
    """Torch-Pruning's MagnitudePruner (its default magnitude importance, p=2) on a copy: a fixed per-layer ratio,
    or the ratio (bisected) whose model has ``target_weights`` prunable weights. Returns (model, seconds, ratio)."""
    if tp is None:
        raise RuntimeError("torch-pruning not installed (pip install -e .[bench])")

    def run(r):
        m = copy.deepcopy(model).eval()
        ign = [m.get_submodule(n) for n in ignored]
        t = time.perf_counter()
        with _TimeLimit(TP_SECONDS):
            pruner = tp.pruner.MagnitudePruner(m, x, importance=tp.importance.MagnitudeImportance(p=2),
                                               pruning_ratio=r, ignored_layers=ign, output_transform=_first_tensor)
            pruner.step()
        return m, time.perf_counter() - t

    if target_weights is None:
        m, s = run(ratio_or_target)
        return m, s, ratio_or_target
    lo, hi, best = 0.0, 0.95, None
    for _ in range(10):
        mid = (lo + hi) / 2
        m, s = run(mid)
        if weights(m) > target_weights:
            lo = mid
        else:
            hi, best = mid, (m, s, mid)
    return best if best is not None else (*run(hi), hi)


# -- latency -----------------------------------------------------------------------------------------------------------
def _gpt2():
    import transformers as T

    T.logging.set_verbosity_error()
    torch.manual_seed(0)
    return T.GPT2Model(T.GPT2Config()).eval()


def bench_latency(runs, only=()):
    import torchvision

    torch.manual_seed(0)
    cases = [("resnet18", torchvision.models.resnet18().eval(), lambda b: torch.randn(b, 3, 224, 224), ("fc",),
              None),
             ("resnet50", torchvision.models.resnet50().eval(), lambda b: torch.randn(b, 3, 224, 224), ("fc",),
              None),
             ("vit_b_16", torchvision.models.vit_b_16().eval(), lambda b: torch.randn(b, 3, 224, 224), ("heads",),
              lambda p: p.startswith("encoder.layers.")),
             ("gpt2-small stack", _gpt2(), lambda b: {"input_ids": torch.randint(0, 50257, (b, 32))}, (),
              lambda p: p.startswith("h."))]
    if only:
        cases = [c for c in cases if c[0] in only]
    rows = []
    for name, model, make, ignored, prunable in cases:
        x1 = make(1)
        print(f"[{name}] shrinking (graphprune)...", flush=True)
        gp, gp_s, amount = graphprune_shrink(model, x1, ratio=2.0, prunable=prunable)
        variants = [("dense", model, 0.0), (f"graphprune leverage (amount {amount:.2f})", gp, gp_s)]
        if name.startswith("resnet"):  # channel counts in multiples of 8
            gp8, gp8_s, a8 = graphprune_shrink(model, x1, ratio=2.0, prunable=prunable, round_to=8)
            variants.append((f"graphprune leverage, round_to 8 (amount {a8:.2f})", gp8, gp8_s))
        print(f"[{name}] shrinking (torch-pruning)...", flush=True)
        try:
            tpm, tp_s, r = tp_prune(model, x1, None, ignored=ignored, target_weights=weights(gp))
            variants.append((f"torch-pruning magnitude (ratio {r:.2f})", tpm, tp_s))
        except Exception as exc:  # a failure is a result
            rows.append((name, "torch-pruning magnitude", f"failed: {type(exc).__name__}: {str(exc)[:80]}",
                         "", "", "", "", "", ""))
        runs_ok = []
        for label, m, secs in variants:  # a pruned model that no longer runs is a result, not a crash
            try:
                _forward(m, x1)
                runs_ok.append((label, m, secs))
            except Exception as exc:
                rows.append((name, label, f"its model fails: {type(exc).__name__}: {str(exc)[:70]}", "", "", "",
                             "", "", "", f"{secs:.1f}"))
        variants = runs_ok
        dense_macs = macs(model, x1)
        ms = [m for _, m, _ in variants]
        t1s, t32s = latencies(ms, x1, runs), latencies(ms, make(32), runs)
        for (label, m, secs), t1, t32 in zip(variants, t1s, t32s):
            w, mc = weights(m), macs(m, x1)
            rows.append((name, label, f"{w / 1e6:.2f}", f"{mc / 1e9:.3f}", f"{dense_macs / mc:.2f}x",
                         f"{t1 * 1e3:.1f}", f"{t1s[0] / t1:.2f}x", f"{t32 * 1e3:.0f}", f"{t32s[0] / t32:.2f}x",
                         f"{secs:.1f}"))
            print(rows[-1], flush=True)
    head = ("model", "variant", "weights M", "GMACs (b=1)", "MAC reduction", "ms b=1", "speed-up b=1", "ms b=32",
            "speed-up b=32", "prune s")
    _table(head, rows)


# -- coverage ----------------------------------------------------------------------------------------------------------
TV = ("resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2", "vgg11_bn", "alexnet", "squeezenet1_0",
      "densenet121", "googlenet", "inception_v3", "mobilenet_v2", "mobilenet_v3_small", "mnasnet0_5",
      "shufflenet_v2_x0_5", "efficientnet_b0", "efficientnet_v2_s", "regnet_y_400mf", "convnext_tiny", "vit_b_16",
      "swin_t", "maxvit_t")


def _coverage_models(only):
    import test_zoo
    import torchvision

    for key in test_zoo.ZOO:
        if not only or key in only:
            yield key, lambda k=key: test_zoo.build(k)
    for name in TV:
        if only and f"tv-{name}" not in only:
            continue

        def make(n=name):
            torch.manual_seed(0)
            extra = {"aux_logits": False, "init_weights": False} if n in ("googlenet", "inception_v3") else {}
            size = 299 if n == "inception_v3" else 224
            return getattr(torchvision.models, n)(**extra), torch.randn(1, 3, size, size)

        yield f"tv-{name}", make


def _masked_difference(model, G, keep, shrunk, x):
    ref = copy.deepcopy(model)
    params = dict(ref.named_parameters())
    with torch.no_grad():
        for b in G.weight_blocks:
            gone = np.flatnonzero(~keep[b.src])
            if gone.size == 0:
                continue
            W = params[b.param]
            if b.layout == "embedding":
                W[gone, :] = 0
            elif b.layout in ("conv", "conv_transpose") and b.groups > 1:
                continue
            elif b.layout == "conv_transpose":
                W[gone] = 0
            else:
                W[:, gone] = 0
    import test_zoo

    a, c = test_zoo._tensors(_forward(ref, x)), test_zoo._tensors(_forward(shrunk, x))
    diffs = [float((u - v).abs().max()) for u, v in zip(a, c) if u.shape == v.shape]
    return max(diffs) if diffs else float("nan")


def bench_coverage(only):
    rows = []
    for key, make in _coverage_models(only):
        model, x = make()
        model.eval()
        gp, gp_note = "", ""
        t = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                G = graphprune.from_model(model, x)
            groups = node_groups(G)
            mixed = any(g.kind == "width" for g in groups)
            for kinds in (("neuron", "channel", "head"), ("neuron", "channel")):
                try:
                    keep = select_nodes(G, 0.3, criterion="l2", kinds=kinds, groups=groups)
                    m = copy.deepcopy(model)
                    shrink(m, G, keep, example_inputs=x, hf_config="ignore")
                    d = _masked_difference(model, G, keep, m, x)
                    gp = "ok" if kinds[-1] == "head" else "ok (no heads)"
                    gp_note = f"{weights(model) / 1e6:.2f}->{weights(m) / 1e6:.2f} M, equal {d:.0e}" + (
                        "" if not mixed else ", width kept")
                    break
                except graphprune.GraphPruneError as exc:
                    gp, gp_note = "refused", str(exc).split(":")[0][:90]
        except Exception as exc:
            gp, gp_note = "failed", f"{type(exc).__name__}: {str(exc)[:90]}"
        gp_s = time.perf_counter() - t
        try:
            m = copy.deepcopy(model)
            ign = [mod for mod in m.modules() if isinstance(mod, nn.Linear) and mod.out_features in (10, 1000)]
            args = x if isinstance(x, torch.Tensor) else x
            with _TimeLimit(TP_SECONDS):
                pruner = tp.pruner.MagnitudePruner(m, args, importance=tp.importance.MagnitudeImportance(p=2),
                                                   pruning_ratio=0.3, ignored_layers=ign,
                                                   output_transform=_first_tensor)
                pruner.step()
            _forward(m, x)
            tpr = f"ok ({weights(model) / 1e6:.2f}->{weights(m) / 1e6:.2f} M)"
        except Exception as exc:
            tpr = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:70] if str(exc) else ''}"
        rows.append((key, gp, gp_note, f"{gp_s:.1f}", tpr))
        print(rows[-1], flush=True)
    _table(("model", "graphprune", "graphprune detail", "graphprune s", "torch-pruning"), rows)
    ok = sum(r[1].startswith("ok") for r in rows)
    ok_tp = sum(r[4].startswith("ok") for r in rows)
    print(f"\ngraphprune shrinks and runs {ok}/{len(rows)} (with heads: "
          f"{sum(r[1] == 'ok' for r in rows)}); torch-pruning {ok_tp}/{len(rows)}")


# -- accuracy ----------------------------------------------------------------------------------------------------------
def bench_accuracy(seeds):
    from graphprune.experiments.data import load_dataset
    from graphprune.experiments.study import FINETUNE, _train_dense
    from graphprune.experiments.train import Schedule, evaluate, train

    ds = load_dataset("mnist1d")
    rows = []
    for seed in seeds:
        job = dict(model="cnn", dataset="mnist1d", seed=seed, schedule=Schedule().as_dict(), dataset_kwargs={},
                   out_dir=os.path.join(HERE, "..", "data", "results"))
        print(f"dense cnn seed {seed} (trained once, cached)...", flush=True)
        path = _train_dense(job)
        from graphprune.experiments.models import build_model

        dense = build_model("cnn", features=ds.num_features, classes=ds.num_classes, seed=seed)
        dense.load_state_dict(torch.load(path, weights_only=True)["state_dict"])
        dense.eval()
        x = torch.randn(1, ds.num_features)
        base = weights(dense)
        rows.append((seed, "dense", "1x", f"{base}", f"{evaluate(dense, ds) * 100:.1f}", ""))
        calib = ds.x_train[:256]  # a little calibration data for the data-aware rows
        for ratio in (2.0, 4.0):
            gp_models = {}
            for crit in ("leverage", "l2", "random"):
                gp_models[f"graphprune {crit}"] = graphprune_shrink(dense, x, ratio=ratio, criterion=crit,
                                                                    kinds=("channel", "neuron"), seed=seed)[0]
            for crit in ("leverage", "l2"):
                gp_models[f"graphprune {crit} + calibration"] = graphprune_shrink(
                    dense, x, ratio=ratio, criterion=crit, kinds=("channel", "neuron"), seed=seed,
                    calibration=calib)[0]
            target = weights(gp_models["graphprune leverage"])
            try:
                gp_models["torch-pruning magnitude"] = tp_prune(dense, x, None, ignored=("fc",),
                                                                target_weights=target)[0]
            except Exception as exc:
                print("torch-pruning failed:", exc)
            for label, m in gp_models.items():
                acc0 = evaluate(m, ds)
                ft = copy.deepcopy(m)
                train(ft, ds, FINETUNE, seed=seed)
                rows.append((seed, label, f"{ratio:g}x", f"{weights(m)}", f"{acc0 * 100:.1f}",
                             f"{evaluate(ft, ds) * 100:.1f}"))
                print(rows[-1], flush=True)
    _table(("seed", "method", "fewer weights", "weights", "test acc % (no fine-tune)", "after 5-epoch fine-tune"),
           rows)


def bench_lm():
    """The committed trained byte-level Llama (graphprune.experiments.lm): held-out perplexity per byte, no
    fine-tune, 2x and 4x fewer weights in its decoder layers (MLP neurons and query heads)."""
    from graphprune.experiments.lm import load_lm, perplexity, splits

    train_ids, test = splits()
    dense = load_lm()
    x = {"input_ids": test[:64].unsqueeze(0)}
    calib = {"input_ids": train_ids[: 16 * 128].reshape(16, 128)}  # 16 x 128 training bytes
    rows = [("dense", "1x", f"{weights(dense)}", f"{perplexity(dense, test):.3f}")]
    print(rows[-1], flush=True)
    blocks = lambda p: p.startswith("model.layers.")  # noqa: E731
    for ratio in (2.0, 4.0):
        for crit in ("leverage", "l2", "random"):
            m, _, amount = graphprune_shrink(dense, x, ratio=ratio, criterion=crit, prunable=blocks,
                                             hf_config="update")
            rows.append((f"graphprune {crit} (amount {amount:.2f})", f"{ratio:g}x", f"{weights(m)}",
                         f"{perplexity(m, test):.3f}"))
            print(rows[-1], flush=True)
        for crit in ("leverage", "l2"):
            m, _, amount = graphprune_shrink(dense, x, ratio=ratio, criterion=crit, prunable=blocks,
                                             hf_config="update", calibration=calib)
            rows.append((f"graphprune {crit} + calibration (amount {amount:.2f})", f"{ratio:g}x", f"{weights(m)}",
                         f"{perplexity(m, test):.3f}"))
            print(rows[-1], flush=True)
        try:  # one run at graphprune's amount (a bisection of Torch-Pruning on this model takes too long here)
            m = tp_prune(dense, x, amount, ignored=("lm_head", "model.embed_tokens"))[0]
            rows.append((f"torch-pruning magnitude (ratio {amount:.2f})", f"{ratio:g}x", f"{weights(m)}",
                         f"{perplexity(m, test):.3f}"))
        except Exception as exc:
            rows.append(("torch-pruning magnitude", f"{ratio:g}x", "", f"failed: {type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:80] if str(exc) else ''}"))
        print(rows[-1], flush=True)
    _table(("method", "fewer weights in the layers", "weights", "test perplexity per byte"), rows)


def _table(head, rows):
    print()
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print("| " + " | ".join(str(c) for c in r) + " |")
    print(flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--what", default="latency", help="comma list of latency, coverage, accuracy, lm")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--only", default="", help="coverage: comma list of model keys (tv-resnet18, hf-gpt2, ...); "
                    "latency: of case names (resnet50, vit_b_16)")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"torch threads: {torch.get_num_threads()}, cpu count: {os.cpu_count()}", flush=True)
    sections = {"latency": lambda: bench_latency(a.runs, [k for k in a.only.split(",") if k]),
                "coverage": lambda: bench_coverage([k for k in a.only.split(",") if k]),
                "accuracy": lambda: bench_accuracy([int(s) for s in a.seeds.split(",")]),
                "lm": bench_lm}
    for what in a.what.split(","):
        if what not in sections:
            raise SystemExit(f"--what: unknown section {what!r}; known: {', '.join(sections)}")
        try:
            sections[what]()
        except Exception:
            traceback.print_exc()


if __name__ == "__main__":
    main()
