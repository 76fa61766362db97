"""Fingerprints of the masks (and pruned weights) graphprune computes on a fixed set of cases.

    python benchmarks/reference_masks.py --write benchmarks/reference_masks.json   # before a refactor
    python benchmarks/reference_masks.py --check benchmarks/reference_masks.json   # after: every case byte-identical

A behaviour-preserving change (the house issue) must leave every fingerprint unchanged. The cases cover every
shipped sparsifier on the test models (MLP, LeNet, residual, depthwise, 1-D conv, transformer, attention, tied
embeddings, concatenation), the spectral options, global allocation, the calibrated methods with ``prune``, and the
structured selection and shrink. One torch and one BLAS thread, so the floating point is the same on every run of
the same machine. Prints one line per case and, with ``--check``, exits 1 if any case differs.
"""

import argparse
import hashlib
import json
import os
import sys

import torch

_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path[:0] = [_ROOT, os.path.join(_ROOT, "tests")]  # this checkout's package, not an installed one

import graphprune  # noqa: E402
from graphprune._executor import limited_threads  # noqa: E402
from models import MODELS, build  # noqa: E402


def digest(tensors):
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        t = t.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes())
    return h.hexdigest()[:16]


GRAPH_METHODS = [
    ("spectral", {}),
    ("spectral", {"width": "all"}),
    ("spectral", {"width": "all", "allocation": "global"}),
    ("spectral", {"width": "all", "sampling": "with_replacement", "reweight": True}),
    ("spectral", {"iterations": 3}),
    ("spectral", {"channels": True}),
    ("spectral", {"allocation": "uniform"}),
    ("random", {}),
    ("random", {"allocation": "global"}),
    ("magnitude", {}),
    ("magnitude", {"allocation": "global"}),
    ("magnitude", {"allocation": "erk"}),
    ("degree", {}),
]
SPARSITIES = (0.5, 0.9, 0.99)
DATA_METHODS = ["wanda", "sparsegpt", "ria", "flow", "snip", "synflow", "grasp"]


def cases():
    for name in MODELS:
        for method, opts in GRAPH_METHODS:
            for s in SPARSITIES:
                yield ("graph", name, method, opts, s)
        for method in DATA_METHODS:
            yield ("prune", name, method, {}, 0.7)
        for criterion in ("leverage", "degree", "l1", "l2", "random"):
            yield ("select", name, criterion, {}, 0.5)
        yield ("shrink", name, "leverage", {}, 0.5)


def run_case(kind, name, method, opts, s):
    model, x = build(name, seed=0)
    if kind == "graph":
        G = graphprune.from_model(model, x)
        masks = graphprune.sparsify(G, method, sparsity=s, seed=3, **opts)
        return digest(dict(masks))
    if kind == "prune":
        calib = torch.cat([x] * 4) if x.dtype.is_floating_point else torch.cat([x] * 4)
        kw = {}
        if method in ("snip", "grasp", "synflow"):
            with torch.no_grad():
                labels = model(calib).argmax(-1)
            G = graphprune.from_model(model, x)
            kw = {"model": model, "data": [(calib, labels)]}
            if method == "synflow":
                kw["input_shape"] = tuple(x.shape[1:])
            masks = graphprune.sparsify(G, method, sparsity=s, seed=3, **kw)
            return digest(dict(masks))
        masks = graphprune.prune(model, x, method, sparsity=s, seed=3, calibration=calib, permanent=True,
                                 progress=False, **kw)
        state = {k: v for k, v in model.state_dict().items()}
        return digest(dict(masks)) + ":" + digest(state)
    G = graphprune.from_model(model, x)
    if kind == "select":
        sel = graphprune.select_nodes(G, s, criterion=method, seed=3)
        return digest({k: torch.as_tensor(v) for k, v in sel.items()})
    if kind == "shrink":
        graphprune.prune(model, x, method, sparsity=s, seed=3, structured=True, progress=False)
        return digest(dict(model.state_dict()))
    raise ValueError(kind)


def main():
    ap = argparse.ArgumentParser()
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--write")
    g.add_argument("--check")
    ap.add_argument("--only", default=None, help="substring of the case key")
    args = ap.parse_args()
    import logging
    logging.getLogger("graphprune").setLevel(logging.WARNING)
    import warnings
    warnings.simplefilter("ignore")
    ref = {}
    if args.check:
        with open(args.check) as f:
            ref = json.load(f)
    out, bad = {}, []
    with limited_threads(1):
        for kind, name, method, opts, s in cases():
            key = f"{kind} {name} {method} {json.dumps(opts, sort_keys=True)} {s}"
            if args.only and args.only not in key:
                continue
            try:
                val = run_case(kind, name, method, opts, s)
            except Exception as exc:  # a case that raises is fingerprinted by its error class and message
                val = f"error {type(exc).__name__}: {str(exc)[:200]}"
            out[key] = val
            status = ""
            if args.check:
                status = "same" if ref.get(key) == val else "DIFFERS"
                if status == "DIFFERS":
                    bad.append(key)
            print(f"{key:80s} {val[:40]:40s} {status}", flush=True)
    if args.write:
        tmp = args.write + ".tmp"
        with open(tmp, "w") as f:
            json.dump(out, f, indent=1, sort_keys=True)
        os.replace(tmp, args.write)
        print(f"{len(out)} cases written to {args.write}")
    else:
        print(f"{len(out)} cases, {len(bad)} differ")
        for k in bad:
            print("DIFFERS:", k, "was", ref.get(k), "now", out[k])
        sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
