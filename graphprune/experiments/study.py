"""The paper's study: prune at initialisation, one-shot, train, and compare accuracy against compression.

Every method is a sparsifier on the exported graph, so one density allocation and one masks-back path serve them
all. Results go to a CSV (resumable: runs already there are skipped), a plot (accuracy against compression on a
log axis, one line per method with a min-max band over seeds) and a markdown table. Same seeds, same numbers:
each run uses one intra-op thread and seeds for the initialisation, the sparsifier and the batch order.
"""

from __future__ import annotations

import math
import numbers
import os
import time

from .._validation import DATASETS, Boolean, InstanceOf, Interval, Options, PathLike, check_param
from ..errors import ParameterError
from .models import MODELS
from .train import Schedule

__all__ = ["METHODS", "COMPRESSIONS", "run_study", "summarize", "plot_study", "markdown_table"]

#: name -> (registered sparsifier, options). Allocation follows each method's paper: global thresholds for the
#: saliency scores and magnitude, per-layer (uniform) for random, degree and spectral, ERK for ERK random.
#: "spectral-erk" (spectral sampling within ERK per-layer densities) separates the effect of the sampling rule
#: from that of the allocation; the paper's allocation is not known to us. "spectral-guard" keeps one edge per
#: node first (where the budget allows), to test whether dead neurons explain the losses.
METHODS = {
    "random": ("random", {}),
    "random-erk": ("random", {"allocation": "erk"}),
    "magnitude": ("magnitude", {"allocation": "global"}),
    "snip": ("snip", {"batches": 4}),
    "grasp": ("grasp", {"batches": 4}),
    "synflow": ("synflow", {}),
    "synflow-iter": ("synflow", {"iterations": 100}),
    "degree": ("degree", {}),
    "spectral": ("spectral", {}),
    "spectral-rolled": ("spectral", {"view": "rolled"}),
    "spectral-reweight": ("spectral", {"reweight": True}),
    "spectral-erk": ("spectral", {"allocation": "erk"}),
    "spectral-guard": ("spectral", {"guard": True}),
}

#: Compression ratios 10^0.5 ... 10^3 in steps of 10^0.25 (density 31.6% down to 0.1%).
COMPRESSIONS = tuple(round(10 ** (0.5 + 0.25 * i), 4) for i in range(11))

KEY = ("model", "dataset", "method", "compression", "seed")


def _one_run(job):
    """Prune one freshly initialised model, train it, and return the result row (runs in a worker process)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one intra-op thread: the same numbers whatever the machine's core count
    try:
        return _run_job(job)
    finally:
        torch.set_num_threads(threads)


def _run_job(job):
    import graphprune

    from .data import load_dataset
    from .models import build_model
    from .train import train

    t0 = time.perf_counter()
    ds = load_dataset(job["dataset"], **job.get("dataset_kwargs", {}))
    model = build_model(job["model"], features=ds.num_features, classes=ds.num_classes, seed=job["seed"])
    G = graphprune.from_model(model, ds.x_train[:2])
    name, opts = METHODS[job["method"]]
    opts = dict(opts)
    if name in ("snip", "grasp", "synflow"):
        opts.update(model=model, data=ds.loader("train", batch_size=128, seed=job["seed"]))
        if name == "synflow":
            opts["input_shape"] = (ds.num_features,)
    density = 1.0 / job["compression"]
    sparsifier = graphprune.get_sparsifier(name)(density=density, seed=job["seed"], **opts)
    masks = sparsifier.sparsify(G)
    scales = getattr(sparsifier, "scales_", None) or None
    rep = graphprune.report(G, masks, spectral=job.get("spectral_metrics", True))
    graphprune.apply_masks(model, G, masks, scales=scales)
    res = train(model, ds, Schedule(**job["schedule"]), seed=job["seed"], progress=job.get("progress", False))
    f = rep.frame
    row = {k: job[k] for k in KEY}
    row.update(
        density=G.with_masks(masks).density(), log10_compression=math.log10(job["compression"]),
        test_acc=res["test_acc"], train_acc=res["train_acc"],
        effective_density=rep.summary["effective_density"], effective_sparsity=rep.summary["effective_sparsity"],
        layer_collapse=bool(rep.summary["layer_collapse"]), collapsed_blocks=int((f.effective_kept == 0).sum()),
        dead_neurons=int(f.dead_outputs.sum()), log10_paths=rep.summary["log10_paths"],
        median_kappa=float(f.kappa.median()) if "kappa" in f else float("nan"),
        median_ramanujan_gap=float(f.ramanujan_gap.median()) if "ramanujan_gap" in f else float("nan"),
        seconds=time.perf_counter() - t0,
    )
    return row


def run_study(model: str = "mlp", dataset: str = "mnist1d", *, methods=None, compressions=COMPRESSIONS,
              seeds=(0, 1, 2), schedule: Schedule | None = None, out_dir: str = "data/results", jobs: int = 1,
              progress: bool = True, spectral_metrics: bool = True, dataset_kwargs: dict | None = None,
              tag: str | None = None):
    """Run (or resume) the study and write ``<out_dir>/study_<tag>.csv``, ``.png`` and ``.md``.

    Parameters
    ----------
    model : str
        A name of :data:`graphprune.experiments.models.MODELS`.
    dataset : {"mnist1d", "synthetic"}
    methods : list of str, optional
        Keys of :data:`METHODS` (default all).
    compressions : sequence of float
        Compression ratios (1 / density).
    seeds : sequence of int
    schedule : Schedule, optional
        The fixed training schedule (default ``Schedule()``: 40 epochs).
    jobs : int
        Worker processes (each uses one thread).
    tag : str, optional
        File name stem (default ``<model>_<dataset>``).

    Returns
    -------
    dict
        ``frame`` (all rows in the CSV), ``csv``, ``plot``, ``markdown`` (paths), ``ran`` (number of new runs).
    """
    import pandas as pd

    check_param("model", model, [Options(sorted(MODELS))], "run_study")
    check_param("dataset", dataset, [Options(DATASETS)], "run_study")
    check_param("schedule", schedule, [InstanceOf(Schedule, "a Schedule"), None], "run_study")
    check_param("jobs", jobs, [Interval(numbers.Integral, 1, None)], "run_study")
    for name, value in (("progress", progress), ("spectral_metrics", spectral_metrics)):
        check_param(name, value, [Boolean()], "run_study")
    check_param("out_dir", out_dir, [PathLike()], "run_study")
    check_param("tag", tag, [str, None], "run_study")
    schedule = schedule or Schedule()
    methods = list(methods or METHODS)
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ParameterError(f"The 'methods' parameter of run_study has unknown method(s) {bad}. Known: "
                             f"{', '.join(METHODS)}.")
    if isinstance(compressions, (str, bytes)) or not hasattr(compressions, "__iter__") or any(
            not Interval(numbers.Real, 1, None).is_satisfied_by(c) for c in compressions):
        raise ParameterError(f"The 'compressions' parameter of run_study must be a list of numbers >= 1 "
                             f"(1 / density). Got {compressions!r} instead.")
    if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__iter__") or any(
            not Interval(numbers.Integral, 0, None).is_satisfied_by(x) for x in seeds):
        raise ParameterError(f"The 'seeds' parameter of run_study must be a list of ints >= 0. Got {seeds!r} "
                             "instead.")
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.join(out_dir, f"study_{tag or f'{model}_{dataset}'}")
    csv = stem + ".csv"
    done = pd.read_csv(csv) if os.path.exists(csv) else pd.DataFrame(columns=list(KEY))
    have = set(zip(done.model.astype(str), done.dataset.astype(str), done.method.astype(str),
                   done.compression.astype(float).round(6), done.seed.astype(int)))
    todo = []
    for seed in seeds:
        for c in compressions:
            for m in methods:
                if (model, dataset, m, round(float(c), 6), int(seed)) in have:
                    continue
                todo.append(dict(model=model, dataset=dataset, method=m, compression=float(c), seed=int(seed),
                                 schedule=schedule.as_dict(), spectral_metrics=spectral_metrics,
                                 progress=progress and jobs <= 1,  # epoch bars only in-process
                                 dataset_kwargs=dict(dataset_kwargs or {})))
    if dataset == "mnist1d":  # generate and cache once, before the workers start
        from .data import mnist1d

        mnist1d(**(dataset_kwargs or {}))
    rows_iter = _execute(todo, jobs)
    if progress and todo:
        from tqdm.auto import tqdm

        rows_iter = tqdm(rows_iter, total=len(todo), desc=f"study {model}", unit="run")
    for row in rows_iter:
        pd.DataFrame([row]).to_csv(csv, mode="a", header=not os.path.exists(csv) or os.path.getsize(csv) == 0,
                                   index=False)
    frame = pd.read_csv(csv)
    frame = frame[frame.method.isin(methods)]
    plot = plot_study(frame, stem + ".png", title=f"{model} on {dataset}")
    md = markdown_table(frame)
    with open(stem + ".md", "w") as f:
        f.write(md)
    return {"frame": frame, "csv": csv, "plot": plot, "markdown": stem + ".md", "ran": len(todo)}


def _execute(todo, jobs):
    if jobs <= 1 or len(todo) <= 1:
        for job in todo:
            yield _one_run(job)
        return
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(jobs) as pool:
        yield from pool.imap(_one_run, todo)


def summarize(frame):
    """Mean, min and max test accuracy per (method, compression) over seeds."""
    g = frame.groupby(["method", "compression"]).test_acc
    return g.agg(["mean", "min", "max", "count"]).reset_index()


def markdown_table(frame) -> str:
    """Mean test accuracy (%) per method (rows) and compression (columns), min-max over seeds in brackets when
    several seeds ran, and the fraction of runs with layer collapse."""
    s = summarize(frame)
    comps = sorted(s.compression.unique())
    order = [m for m in METHODS if m in set(s.method)]
    head = "| method | " + " | ".join(f"{c:g}x" for c in comps) + " |"
    lines = [head, "|" + "---|" * (len(comps) + 1)]
    for m in order:
        cells = []
        for c in comps:
            r = s[(s.method == m) & (s.compression == c)]
            if r.empty:
                cells.append("")
                continue
            r = r.iloc[0]
            cell = f"{100 * r['mean']:.1f}"
            if r["count"] > 1:
                cell += f" ({100 * r['min']:.1f}-{100 * r['max']:.1f})"
            col = frame[(frame.method == m) & (frame.compression == c)].layer_collapse.astype(bool)
            if col.any():
                cell += f" C{int(col.sum())}/{len(col)}"
            cells.append(cell)
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Test accuracy in %, mean (min-max) over seeds; Ck/n: layer collapse in k of n runs.")
    return "\n".join(lines) + "\n"


def plot_study(frame, path, *, title=""):
    """Accuracy against compression (log axis), one line per method with a min-max band; saved to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = summarize(frame)
    fig, ax = plt.subplots(figsize=(8, 5))
    colors = plt.get_cmap("tab20").colors
    for i, m in enumerate(m for m in METHODS if m in set(s.method)):
        r = s[s.method == m].sort_values("compression")
        style = "-" if m.startswith("spectral") else "--"
        c = colors[(2 * i) % 20 if i < 10 else (2 * (i - 10) + 1) % 20]
        ax.plot(r.compression, 100 * r["mean"], style, marker="o", ms=3, label=m, color=c)
        ax.fill_between(r.compression, 100 * r["min"], 100 * r["max"], alpha=0.15, color=c)
    ax.set_xscale("log")
    ax.set_xlabel("compression ratio (1 / density)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

