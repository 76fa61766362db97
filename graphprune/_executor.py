"""Run independent jobs serially, on any ``concurrent.futures.Executor``, or on a Ray cluster.

graphprune does not schedule work itself: it hands plain picklable ``fn(job)`` calls to an existing engine and
collects the results as they complete. ``executor`` is ``None`` (serial, in this process), any
``concurrent.futures.Executor`` (a ``ProcessPoolExecutor``, a Dask distributed client's ``get_executor()``, ...)
or ``"ray"`` (Ray tasks on the cluster this process is connected to through ``ray.init``). Each job runs with its
torch and BLAS thread pools limited to ``threads`` (one by default), so workers never oversubscribe their cores;
results never depend on where a job ran. A job that raises is re-raised in the caller as a
:class:`~graphprune.errors.GraphPruneError` naming the job; jobs not yet started are cancelled.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import numbers

from ._validation import Interval, check_param
from .errors import GraphPruneError, JobError, MissingDependencyError, ParameterError

__all__ = ["run_jobs", "check_executor", "limited_threads", "JobError"]


def check_executor(executor, owner: str):
    """Validate ``executor`` (None, "ray" or a concurrent.futures.Executor); return it."""
    if executor is None or isinstance(executor, cf.Executor):
        return executor
    if executor == "ray":
        try:
            import ray
        except ImportError:
            raise MissingDependencyError("executor='ray' needs Ray: pip install 'graphprune[ray]'.") from None
        if not ray.is_initialized():
            raise ParameterError(f"The 'executor' parameter of {owner} is 'ray', but this process is not connected "
                                 "to a Ray cluster: call ray.init() (a local one) or ray.init(address='auto') "
                                 "first.")
        return executor
    if hasattr(executor, "submit") and callable(executor.submit):  # duck-typed executors (e.g. Dask's)
        return executor
    raise ParameterError(f"The 'executor' parameter of {owner} must be None, 'ray' or a "
                         f"concurrent.futures.Executor. Got {executor!r} instead.")


@contextlib.contextmanager
def limited_threads(threads: int = 1):
    """Limit torch's intra-op threads and every BLAS/OpenMP pool (threadpoolctl) inside the block, then restore."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with scipy's stack
        limiter = contextlib.nullcontext()
    else:
        limiter = threadpool_limits(limits=threads)
    try:
        with limiter:
            yield
    finally:
        torch.set_num_threads(before)


def _call(fn, job, threads):
    """What a worker runs: ``fn(job)`` with its thread pools limited (module level, so it pickles)."""
    with limited_threads(threads):
        return fn(job)


def _fail(describe, job, exc):
    cause = getattr(exc, "cause", None) or exc  # Ray wraps the worker's exception
    first = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    return JobError(f"{describe(job)} failed: {type(cause).__name__}: {first}")


def run_jobs(fn, jobs, *, executor=None, describe=repr, threads: int = 1, owner: str = "run_jobs"):
    """Yield ``(index, result)`` of ``fn(job)`` for every job, as they complete.

    Parameters
    ----------
    fn : callable
        A module-level function (it is pickled for process and Ray workers).
    jobs : sequence
        Picklable job descriptions.
    executor : None, "ray" or concurrent.futures.Executor
    describe : callable
        ``describe(job)`` names a job in error messages ("block 'layer1.0.conv1'", "run mlp/spectral/10x/seed 0").
    threads : int, default 1
        torch and BLAS threads per job.

    Raises
    ------
    JobError
        The first job that fails, named; the jobs not yet started are cancelled and no further result is yielded.
    """
    check_param("threads", threads, [Interval(numbers.Integral, 1, None)], owner)
    executor = check_executor(executor, owner)
    jobs = list(jobs)
    if executor is None:
        for i, job in enumerate(jobs):
            try:
                result = _call(fn, job, threads)
            except GraphPruneError:
                raise
            except Exception as exc:
                raise _fail(describe, job, exc) from exc
            yield i, result
        return
    if executor == "ray":
        yield from _run_ray(fn, jobs, describe, threads)
        return
    futures = {executor.submit(_call, fn, job, threads): i for i, job in enumerate(jobs)}
    try:
        for fut in cf.as_completed(futures):
            i = futures[fut]
            try:
                result = fut.result()
            except Exception as exc:
                raise _fail(describe, jobs[i], exc) from exc
            yield i, result
    finally:
        for fut in futures:
            fut.cancel()


def _run_ray(fn, jobs, describe, threads):
    import ray

    remote = ray.remote(num_cpus=threads)(_call)
    refs = {remote.remote(fn, job, threads): i for i, job in enumerate(jobs)}
    pending = list(refs)
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                i = refs[ref]
                try:
                    result = ray.get(ref)
                except Exception as exc:
                    raise _fail(describe, jobs[i], exc) from exc
                yield i, result
    finally:
        for ref in pending:
            ray.cancel(ref)
