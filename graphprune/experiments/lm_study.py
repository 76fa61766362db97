"""The trained-language-model study: one-shot pruning of the committed byte-level Llama, held-out perplexity.

Every decoder projection (q, k, v, o, gate, up, down) is pruned; the embedding and the head stay dense. Each run
loads the trained model (:data:`STUDY_MODEL`, :func:`load_model`), draws its calibration windows from the
training split with the run's seed, prunes with :func:`graphprune.prune` (``permanent=True``: in place, repaired
weights written) and measures the perplexity per byte of the held-out split. Data-free methods use the same seed
for their own randomness. Rows go to a resumable CSV (one per (method, sparsity, seed)).

Run with ``python -m graphprune.experiments.lm_study`` (options: ``--methods``, ``--sparsities``, ``--seeds``).
"""

from __future__ import annotations

import argparse
import math
import os
import time

from .._executor import limited_threads

__all__ = ["LM_METHODS", "SPARSITIES", "STUDY_MODEL", "load_model", "run_lm_study", "lm_table", "plot_lm_study"]

#: method label -> (registry name, options). ``magnitude`` compares the whole matrix, ``magnitude-row`` each
#: output row (the two groups of the LLM papers).
LM_METHODS = {
    "magnitude": ("magnitude", {}),
    "magnitude-row": ("magnitude", {"comparison": "row"}),
    "wanda": ("wanda", {}),
    "ria": ("ria", {}),
    "sparsegpt": ("sparsegpt", {}),
    "spectral": ("spectral", {}),
    "spectral-paper": ("spectral", {"width": "all"}),
    "flow": ("flow", {}),
    "flow-none": ("flow", {"repair": "none"}),
    "flow-obs": ("flow", {"repair": "obs"}),
    "flow-pruned": ("flow", {"target": "pruned"}),
    "flow-erk": ("flow", {"allocation": "erk"}),
    "flow-degree": ("flow", {"criterion": "degree"}),
    "flow-wanda": ("flow", {"criterion": "flow"}),
    "sparsegpt-erk": ("sparsegpt", {"allocation": "erk"}),
}

#: The methods drawn by :func:`plot_lm_study` (the table has all; the spectral default is far above the others).
PLOT_METHODS = ("magnitude", "magnitude-row", "wanda", "ria", "sparsegpt", "spectral-paper", "flow-pruned", "flow")

#: Unstructured sparsities and the 2:4 pattern.
SPARSITIES = ("0.5", "0.6", "0.7", "2:4")

#: Calibration: 32 windows of 128 bytes from the training split (4096 tokens).
CALIBRATION = dict(n=32, seq_len=128)

KEEP_DENSE = ["model.embed_tokens.weight", "lm_head.weight"]
#: ``mask_seconds``: the prune() call (statistics, masks, repairs, writing) less the time of one export of the model.
COLUMNS = ["method", "sparsity", "seed", "perplexity", "dense_perplexity", "density", "mask_seconds"]


#: The weights the committed study ran on: :data:`graphprune.experiments.lm.DEFAULT_PATH` (the committed byte-level
#: Llama, ``python -m graphprune.experiments.lm train``; its recipe in data/lm/README.md). The file carries its
#: config, so :func:`load_model` reads any file :func:`graphprune.experiments.lm.save_lm` wrote.
STUDY_MODEL = os.path.join(os.path.dirname(__file__), "..", "..", "data", "lm", "tiny_llama.safetensors")


def load_model(path=None):
    """The LM in ``path`` (default :data:`STUDY_MODEL`), built from the config stored in the file's metadata."""
    import json

    import transformers
    from safetensors import safe_open
    from safetensors.torch import load_file

    from ..errors import ParameterError

    path = path or STUDY_MODEL
    if not os.path.exists(path):
        raise ParameterError(f"No LM weights at {path!r}: pass --model <file written by "
                             "graphprune.experiments.lm.save_lm>.")
    with safe_open(path, "pt") as f:
        cfg = json.loads((f.metadata() or {})["config"])
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**cfg))
    model.load_state_dict(load_file(path))
    return model.float().eval()


def _one(method: str, sparsity: str, seed: int, model_path=None) -> dict:
    import torch

    import graphprune

    from . import lm

    name, opts = LM_METHODS[method]
    cls = graphprune.get_sparsifier(name)
    model = load_model(model_path)
    _, test = lm.splits()
    calib = lm.calibration_batches(seed=seed, **CALIBRATION)
    kw = dict(opts)
    if sparsity.count(":"):
        if "nm" not in cls._get_param_names() or kw.get("allocation", "uniform") != "uniform":
            return None  # no N:M form (spectral samples; an N:M pattern fixes every block's density)
        kw["nm"] = sparsity
    else:
        kw["sparsity"] = float(sparsity)
    if getattr(cls, "needs_data", False):
        kw["calibration"] = {"input_ids": calib}
    t0 = time.perf_counter()
    graphprune.from_model(model, {"input_ids": calib[:1]})  # the export prune() repeats, timed to subtract it
    export_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    masks = graphprune.prune(model, {"input_ids": calib[:1]}, name, seed=seed, keep_dense=KEEP_DENSE,
                             permanent=True, progress=False, **kw)
    seconds = time.perf_counter() - t0 - export_seconds
    kept = sum(int(masks[n].sum()) for n in masks if n not in KEEP_DENSE)
    total = sum(masks[n].numel() for n in masks if n not in KEEP_DENSE)
    with torch.no_grad():
        ppl = lm.perplexity(model, test)
    return dict(method=method, sparsity=sparsity, seed=seed, perplexity=ppl, dense_perplexity=_dense_ppl(model_path),
                density=kept / total, mask_seconds=seconds)


_DENSE = {}


def _dense_ppl(model_path=None) -> float:
    from . import lm

    if model_path not in _DENSE:
        _DENSE[model_path] = lm.perplexity(load_model(model_path), lm.splits()[1])
    return _DENSE[model_path]


def run_lm_study(methods=None, sparsities=SPARSITIES, seeds=(0, 1, 2), *, out_dir: str = "data/results",
                 model_path=None, progress: bool = True):
    """Run every (method, sparsity, seed) not yet in ``<out_dir>/study_lm.csv``, appending rows as they finish.

    One torch and BLAS thread (the seconds compare across methods). Returns the whole frame.
    """
    import pandas as pd

    methods = list(methods or LM_METHODS)
    path = os.path.join(out_dir, "study_lm.csv")
    frame = pd.read_csv(path, dtype={"sparsity": str}) if os.path.exists(path) else pd.DataFrame(columns=COLUMNS)
    done = {(r.method, str(r.sparsity), int(r.seed)) for r in frame.itertuples()}
    todo = [(m, s, sd) for s in sparsities for m in methods for sd in seeds if (m, s, sd) not in done]
    with limited_threads(1):
        if todo:  # warm-up (torch.export's first trace, allocator): the first timed run is not charged for it
            _one("magnitude", "0.5", 0, model_path)
        for i, (m, s, sd) in enumerate(todo):
            row = _one(m, s, sd, model_path)
            if row is None:
                row = dict(method=m, sparsity=s, seed=sd, perplexity=math.nan, dense_perplexity=math.nan,
                           density=math.nan, mask_seconds=math.nan)
            frame = pd.concat([frame, pd.DataFrame([row])], ignore_index=True)
            tmp = path + ".tmp"
            frame.to_csv(tmp, index=False)
            os.replace(tmp, path)  # atomic: a killed run keeps every finished row
            if progress:
                print(f"[{i + 1}/{len(todo)}] {m} {s} seed {sd}: ppl {row['perplexity']:.3f} "
                      f"({row['mask_seconds']:.1f} s)", flush=True)
    return frame


def lm_table(frame) -> str:
    """Markdown: mean perplexity (min-max over seeds) per method and sparsity, and the median seconds."""
    sp = [s for s in SPARSITIES if s in set(frame.sparsity.astype(str))]
    lines = ["| method | " + " | ".join(f"{s}" if ":" in s else f"{float(s):.0%}" for s in sp)
             + " | seconds (50%) |", "|---" * (len(sp) + 2) + "|"]
    for m in [m for m in LM_METHODS if m in set(frame.method)]:
        cells = []
        for s in sp:
            v = frame[(frame.method == m) & (frame.sparsity.astype(str) == s)].perplexity.dropna()
            cells.append("n/a" if v.empty else f"{v.mean():.3f} ({v.min():.3f}-{v.max():.3f})" if len(v) > 1
                         else f"{v.mean():.3f}")
        t = frame[(frame.method == m) & (frame.sparsity.astype(str) == "0.5")].mask_seconds.dropna()
        secs = f"{t.median():.2f}" if not t.empty else ""
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {secs} |")
    dense = frame.dense_perplexity.dropna()
    if not dense.empty:
        lines.append(f"\nDense held-out perplexity per byte: {dense.iloc[0]:.3f}.")
    return "\n".join(lines)


def plot_lm_study(frame, path: str) -> None:
    """Perplexity against sparsity per method (mean over seeds, log scale), written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    uns = [s for s in SPARSITIES if ":" not in s]
    shown = [m for m in PLOT_METHODS if m in set(frame.method)]
    for i, m in enumerate(shown):
        ys = [frame[(frame.method == m) & (frame.sparsity.astype(str) == s)].perplexity.mean() for s in uns]
        ax.plot([float(s) for s in uns], ys, marker="o", label=m, color=plt.cm.tab10(i),
                lw=2.5 if m.startswith("flow") else 1.2)
    dense = frame.dense_perplexity.dropna()
    if not dense.empty:
        ax.axhline(dense.iloc[0], color="k", ls=":", label="dense")
    ax.set_yscale("log")
    ax.set_xlabel("sparsity of the decoder projections")
    ax.set_ylabel("held-out perplexity per byte")
    ax.set_title("One-shot pruning of the trained byte-level Llama (mean of the calibration seeds)", fontsize=10)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m graphprune.experiments.lm_study", description=__doc__.split("\n")[0])
    p.add_argument("--methods", default=",".join(LM_METHODS))
    p.add_argument("--sparsities", default=",".join(SPARSITIES))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--out", default="data/results")
    p.add_argument("--model", default=None, help="weights file (default: data/lm/tiny_llama.safetensors)")
    a = p.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    frame = run_lm_study(a.methods.split(","), tuple(a.sparsities.split(",")),
                         tuple(int(s) for s in a.seeds.split(",")), out_dir=a.out, model_path=a.model)
    md = lm_table(frame)
    with open(os.path.join(a.out, "study_lm.md.tmp"), "w") as f:
        f.write(md + "\n")
    os.replace(os.path.join(a.out, "study_lm.md.tmp"), os.path.join(a.out, "study_lm.md"))
    plot_lm_study(frame, os.path.join(a.out, "study_lm.png"))
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
