"""Per-block jobs for executors: a block's work as a plain function of picklable data.

Each job carries the block's weight and current mask (bit-packed), the sparsifier's class and constructor
parameters, the block's budget and its seed stream, so the masks are byte-identical whatever the executor
(:func:`graphprune._executor.run_jobs`) and the number of workers. Global allocation runs its two threshold
passes (:func:`graphprune.sparsify.allocation.global_counts`) as two rounds of jobs.
"""

from __future__ import annotations

import numpy as np
import torch

from .allocation import global_counts, key_histogram, threshold_counts
from .units import _progress, _unit_mask, _warn_zero_block

__all__ = ["block_job", "iter_job_masks"]


def job_spec(sp, graph, b, seed_seq, kind, **extra) -> dict:
    """The picklable description of one block's job (``kind``: ``"mask"``, ``"hist"`` or ``"count"``)."""
    params = {k: v for k, v in sp.get_params().items() if k not in ("executor", "progress")}
    avail = graph.block_mask(b)
    return dict(kind=kind, cls=type(sp), params=params, seed=seed_seq, extra=extra,
                block=dict(name=b.name, param=b.param, layout=b.layout, groups=b.groups, n_src=b.n_src,
                           n_dst=b.n_dst, weight=b.weight.detach().cpu().contiguous()),
                available=np.packbits(avail.reshape(-1).cpu().numpy()), shape=tuple(avail.shape))


def describe_job(job) -> str:
    b = job["block"]
    what = {"mask": "mask", "hist": "score histogram", "count": "threshold count"}[job["kind"]]
    return f"{job['cls'].__name__} {what} of block {b['name']!r} ({b['param']}, shape {tuple(b['weight'].shape)})"


def block_job(job):
    """One block's work, in any process: rebuild a one-block graph from the job's weight and mask, then score or
    mask it with a fresh sparsifier of the same parameters and the block's own seed stream."""
    from ..graph import Block, MultipartiteGraph, Partition

    b = job["block"]
    shape = job["shape"]
    avail = torch.from_numpy(np.unpackbits(job["available"], count=int(np.prod(shape))).astype(bool)).reshape(shape)
    block = Block(b["name"], "src", "dst", param=b["param"], weight=b["weight"], layout=b["layout"],
                  groups=b["groups"])
    G = MultipartiteGraph([Partition("src", b["n_src"], "input"), Partition("dst", b["n_dst"], "output")], [block],
                          masks={b["param"]: avail})
    sp = job["cls"](**job["params"])
    sp.prepare(G)
    try:
        if job["kind"] == "hist":
            return key_histogram(sp._global_scores(G, block, job["seed"]))
        if job["kind"] == "count":
            return threshold_counts(sp._global_scores(G, block, job["seed"]), job["extra"]["edge"])
        ctx = sp._context(G, block, job["seed"])
        if job["extra"]["use_global"]:
            sp.score(ctx)  # the serial path draws once for the threshold: the same stream state here
        m, zero = _unit_mask(sp, ctx, job["extra"]["k"])
        scale = getattr(sp, "scales_", {}).get(b["param"]) if getattr(sp, "reweight", False) else None
        return np.packbits(m.reshape(-1).cpu().numpy()), scale, zero
    finally:
        sp.release()


def run_block_jobs(sp, jobs, progress, what):
    """Yield ``(index, result)`` of every job, on the sparsifier's executor."""
    from .._executor import run_jobs

    it = run_jobs(block_job, jobs, executor=sp.executor, describe=describe_job, owner=type(sp).__name__)
    return _progress(it, progress, f"{type(sp).__name__} {what}", total=len(jobs))


def _global_counts(sp, graph, todo, seeds, d) -> dict:
    """:meth:`Sparsifier._global_counts` as two rounds of jobs (per-block histograms, then per-block counts and
    the candidates inside the threshold's bin): the same split, exactly."""
    def histograms():
        return run_block_jobs(sp, [job_spec(sp, graph, b, seeds[b.name], "hist") for b in todo], False,
                              "histograms")

    def counts(edge):
        return run_block_jobs(sp, [job_spec(sp, graph, b, seeds[b.name], "count", edge=edge) for b in todo],
                              False, "counts")

    return global_counts([b.name for b in todo], round(d * sum(b.num_edges for b in todo)), histograms, counts)


def iter_job_masks(sp, graph, units, d, ss, *, progress=None):
    """The job driver of :meth:`Sparsifier.iter_masks`: ``(block, mask)`` per pruned unit, each computed as one
    job on ``sp.executor`` (budgets and seeds as in the serial driver; global counts in two rounds of jobs)."""
    todo, ks, seeds = sp._plan(graph, units, d, ss, counts=lambda *args: _global_counts(sp, *args))
    jobs = [job_spec(sp, graph, b, seeds[b.name], "mask", k=int(ks[b.name]), use_global=sp.allocation == "global")
            for b in todo]
    show = sp.progress if progress is None else progress
    for i, (bits, scale, zero) in run_block_jobs(sp, jobs, show, "blocks"):
        b = todo[i]
        if zero:  # warned here, not in the worker (whose warnings would stay in its process)
            _warn_zero_block(sp, b, *zero)
        m = torch.from_numpy(np.unpackbits(bits, count=b.num_edges).astype(bool)).reshape(b.weight.shape)
        if scale is not None:
            full = sp.scales_.setdefault(b.param, torch.ones(graph.param_shapes[b.param], dtype=torch.float64))
            b.set_rows(full, scale)
        yield b, m
