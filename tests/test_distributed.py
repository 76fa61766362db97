"""Runs on an executor: serial, a ProcessPoolExecutor and a real local Ray cluster give the same results."""

import concurrent.futures as cf
import copy
import multiprocessing as mp
import os

import pandas as pd
import pytest
import torch
from models import build

import graphprune
from graphprune._executor import JobError, run_jobs
from graphprune.errors import ParameterError
from graphprune.experiments import Schedule, run_study
from graphprune.sparsify.random import RandomSparsifier

try:
    import ray
except ImportError:  # pragma: no cover - CI installs the ray extra
    ray = None

needs_ray = pytest.mark.skipif(ray is None, reason="Ray is not installed (pip install 'graphprune[ray]')")


def square_or_fail(job):
    if job == 3:
        raise ValueError("three is not allowed")
    return job * job


def thread_counts(job):
    import torch
    from threadpoolctl import threadpool_info

    return torch.get_num_threads(), sorted({p["num_threads"] for p in threadpool_info()})


@pytest.fixture(scope="module")
def ray_cluster():
    if ray is None:
        pytest.skip("Ray is not installed")
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.pathsep.join([here, os.path.dirname(here), os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})  # workers import this test module's functions
    yield
    ray.shutdown()


def _pool():
    return cf.ProcessPoolExecutor(2, mp_context=mp.get_context("spawn"))


def test_run_jobs_serial_and_pool_agree_and_name_the_failing_job():
    jobs = [0, 1, 2, 4]
    serial = dict(run_jobs(square_or_fail, jobs))
    with _pool() as pool:
        pooled = dict(run_jobs(square_or_fail, jobs, executor=pool))
    assert serial == pooled == {0: 0, 1: 1, 2: 4, 3: 16}
    with pytest.raises(JobError, match="job 3 failed: ValueError: three is not allowed"):
        list(run_jobs(square_or_fail, [1, 3], describe=lambda j: f"job {j}"))
    with _pool() as pool, pytest.raises(JobError, match="job 3 failed: ValueError: three is not allowed"):
        list(run_jobs(square_or_fail, [1, 3], executor=pool, describe=lambda j: f"job {j}"))


def test_workers_limit_torch_and_blas_threads():
    with _pool() as pool:
        (_, (torch_threads, blas)), = list(run_jobs(thread_counts, [0], executor=pool))
    assert torch_threads == 1 and blas == [1]


def test_bad_executor():
    with pytest.raises(ParameterError, match="'executor' parameter of run_jobs must be None, 'ray' or a "
                                             "concurrent.futures.Executor"):
        list(run_jobs(square_or_fail, [1], executor="dask"))


def _grid(tmp, **kw):
    out = run_study("mlp", "synthetic", methods=["random", "spectral", "magnitude"], compressions=[10.0], seeds=[0],
                    schedule=Schedule(epochs=2), out_dir=str(tmp), progress=False, spectral_metrics=False,
                    dataset_kwargs={"num_samples": 200, "num_features": 12, "num_classes": 3}, **kw)
    return out["frame"].drop(columns=["seconds", "mask_seconds"]).sort_values("method").reset_index(drop=True)


def test_study_rows_are_the_same_on_a_process_pool(tmp_path):
    serial = _grid(tmp_path / "serial")
    with _pool() as pool:
        pooled = _grid(tmp_path / "pool", executor=pool)
    pd.testing.assert_frame_equal(serial, pooled)


def test_a_failing_run_keeps_the_completed_rows(tmp_path, monkeypatch):
    from graphprune.experiments import study

    real = study._run_job

    def flaky(job):
        if job["method"] == "spectral":
            raise RuntimeError("worker lost")
        return real(job)

    monkeypatch.setattr(study, "_run_job", flaky)
    with pytest.raises(JobError, match=r"study run spectral at 10x \(mlp on synthetic, seed 0\) failed: "
                                       "RuntimeError: worker lost"):
        _grid(tmp_path)
    rows = pd.read_csv(tmp_path / "study_mlp_synthetic.csv")
    assert rows.method.tolist() == ["random"]  # completed before the failure, kept (the study resumes)
    monkeypatch.setattr(study, "_run_job", real)
    assert len(_grid(tmp_path)) == 3


@needs_ray
def test_ray_without_a_cluster_is_refused(monkeypatch):
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    with pytest.raises(ParameterError, match=r"not connected to a Ray cluster: call ray.init\(\)"):
        list(run_jobs(square_or_fail, [1], executor="ray"))


@needs_ray
def test_ray_runs_jobs_and_names_a_failing_one(ray_cluster):
    assert dict(run_jobs(square_or_fail, [0, 1, 2], executor="ray")) == {0: 0, 1: 1, 2: 4}
    with pytest.raises(JobError, match="job 3 failed: ValueError: three is not allowed"):
        list(run_jobs(square_or_fail, [1, 3], executor="ray", describe=lambda j: f"job {j}"))
    (_, (torch_threads, blas)), = list(run_jobs(thread_counts, [0], executor="ray"))
    assert torch_threads == 1 and blas == [1]


@needs_ray
def test_study_rows_are_the_same_on_ray(ray_cluster, tmp_path):
    pd.testing.assert_frame_equal(_grid(tmp_path / "serial"), _grid(tmp_path / "ray", executor="ray"))


# -- sparsify on an executor: the same masks, byte for byte ----------------------------------------------------
CASES = [("spectral", {}), ("spectral", {"edges_per_node": 1.0}), ("spectral", {"width": "all"}), ("random", {}),
         ("magnitude", {"allocation": "global"}), ("degree", {}),
         ("spectral", {"width": "all", "reweight": True, "sampling": "with_replacement"}),
         ("random", {"allocation": "global"})]


def _graphs():
    out = []
    for name in ("small_resnet", "transformer"):
        model, x = build(name)
        G = graphprune.from_model(model, x)
        out.append(G.with_masks({b.param: torch.rand(b.weight.shape, generator=torch.Generator().manual_seed(1))
                                 > 0.1 for b in G.weight_blocks[:2] if b.param_slice is None}))
    return out


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _masks(G, method, opts, executor):
    sp = graphprune.get_sparsifier(method)(sparsity=0.8, seed=3, executor=executor, **opts)
    return sp.sparsify(G), getattr(sp, "scales_", None)


def test_sparsify_masks_identical_serial_and_process_pool():
    graphs = _graphs()
    with _pool() as pool:
        for G in graphs:
            for method, opts in CASES:
                serial, s_scales = _masks(G, method, opts, None)
                pooled, p_scales = _masks(G, method, opts, pool)
                assert _same(serial, pooled), (method, opts)
                if opts.get("reweight"):
                    assert _same(s_scales, p_scales)


@needs_ray
def test_sparsify_masks_identical_on_ray(ray_cluster):
    for G in _graphs():
        for method, opts in CASES:
            assert _same(_masks(G, method, opts, None)[0], _masks(G, method, opts, "ray")[0]), (method, opts)


class FailingOnConv2(RandomSparsifier):
    name = None

    def compute_mask(self, ctx, k):
        if ctx.block.param == "block1.conv2.weight":
            raise RuntimeError("bad block")
        return super().compute_mask(ctx, k)


def _failing(executor):
    model, x = build("small_resnet")
    G = graphprune.from_model(model, x)
    before = G.masks
    with pytest.raises(JobError, match=r"FailingOnConv2 mask of block '.*' \(block1\.conv2\.weight, shape "
                                       r"\(\d+, \d+, 3, 3\)\) failed: RuntimeError: bad block"):
        FailingOnConv2(sparsity=0.5, executor=executor).sparsify(G)
    assert _same(before, G.masks)


def test_a_failing_block_is_named_on_a_pool():
    with _pool() as pool:
        _failing(pool)


@needs_ray
def test_a_failing_block_is_named_on_ray(ray_cluster):
    _failing("ray")


def test_whole_graph_sparsifiers_run_serially_and_say_so():
    G = _graphs()[0]
    with _pool() as pool, pytest.warns(RuntimeWarning, match="scope='graph'.*run serially"):
        a = graphprune.sparsify(G, "spectral", sparsity=0.8, seed=0, width="all", scope="graph", executor=pool)
    assert _same(a, graphprune.sparsify(G, "spectral", sparsity=0.8, seed=0, width="all", scope="graph"))
    with _pool() as pool, pytest.warns(RuntimeWarning, match="kept nodes are chosen over the whole graph"):
        a = graphprune.sparsify(G, "spectral", sparsity=0.99, seed=0, executor=pool)  # below 8 edges per node
    assert _same(a, graphprune.sparsify(G, "spectral", sparsity=0.99, seed=0))


def test_prune_permanent_on_a_pool_matches_serial():

    model, x = build("small_resnet")
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    ma = graphprune.prune(a, x, "spectral", sparsity=0.7, permanent=True, progress=False)
    with _pool() as pool:
        mb = graphprune.prune(b, x, "spectral", sparsity=0.7, permanent=True, progress=False, executor=pool)
    assert list(ma) == list(mb) and all(torch.equal(ma[k], mb[k]) for k in ma)
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


@needs_ray
def test_cli_prune_on_ray_matches_local(ray_cluster, tmp_path):
    from graphprune.cli import main

    args = ["prune", "graphprune.experiments.models:MLP", "--input-shape", "1,40", "--sparsity", "0.9", "--quiet"]
    for out, extra in (("a.pt", []), ("b.pt", ["--executor", "ray"])):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # the factory initialises the model from the global RNG: the same model twice
            assert main(args + ["--out", str(tmp_path / out), *extra]) == 0
    assert _same(graphprune.load_masks(tmp_path / "a.pt"), graphprune.load_masks(tmp_path / "b.pt"))


@needs_ray
def test_prune_checkpoint_on_ray_workers_writes_the_same_bytes(ray_cluster, tmp_path):
    """Each Ray worker reads its shard and writes the pruned shard itself: the files equal the serial run's."""
    T = pytest.importorskip("transformers")
    T.logging.set_verbosity_error()
    torch.manual_seed(0)
    cfg = T.LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    T.LlamaForCausalLM(cfg).save_pretrained(tmp_path / "src", max_shard_size="30KB")
    shards = sorted(n for n in os.listdir(tmp_path / "src") if n.endswith(".safetensors"))
    assert len(shards) >= 2
    graphprune.prune_checkpoint(tmp_path / "src", tmp_path / "serial", sparsity=0.5, seed=1, progress=False)
    graphprune.prune_checkpoint(tmp_path / "src", tmp_path / "ray", sparsity=0.5, seed=1, progress=False,
                                executor="ray")
    for name in os.listdir(tmp_path / "src"):
        with open(tmp_path / "serial" / name, "rb") as f, open(tmp_path / "ray" / name, "rb") as g:
            assert f.read() == g.read(), name
