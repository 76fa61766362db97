"""prune_checkpoint: a (sharded) safetensors checkpoint pruned into a new one, shard by shard.

References are independent of the checkpoint path: the same model loaded whole and pruned in memory with
graphprune.prune(..., permanent=True), the source files' own bytes, and safetensors' own reader.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing as mp
import os
import struct

import pytest
import torch
from torch import nn

import graphprune
from graphprune import checkpoint as ck
from graphprune.errors import CheckpointError, ParameterError

T = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")


def _config(tied=False, layers=2):
    return T.LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                         tie_word_embeddings=tied)


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    """A tiny Llama saved as 3+ bfloat16 shards with an index, a config and a tokenizer-like file."""
    T.logging.set_verbosity_error()
    torch.manual_seed(0)
    model = T.LlamaForCausalLM(_config()).to(torch.bfloat16)
    path = str(tmp_path_factory.mktemp("ckpt") / "src")
    model.save_pretrained(path, max_shard_size="16KB")
    with open(os.path.join(path, "tokenizer.json"), "w") as f:
        f.write('{"not": "a real tokenizer, copied as is"}')
    return path


def _shards(path):
    return sorted(n for n in os.listdir(path) if n.endswith(".safetensors"))


def _header(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return f.read(n)


def _in_memory(src, **kw):
    """The reference: the model loaded whole and pruned in place by graphprune.prune."""
    model = T.LlamaForCausalLM.from_pretrained(src)
    ids = {"input_ids": torch.zeros(1, 8, dtype=torch.long)}
    graphprune.prune(model, ids, kw.pop("method", "spectral"), seed=kw.pop("seed", 0), permanent=True,
                     progress=False, **kw)
    return model


def test_sharded_llama_equals_pruning_the_loaded_model_in_memory(src, tmp_path):
    assert len(_shards(src)) >= 3  # the fixture really is sharded
    dst = str(tmp_path / "dst")
    table = graphprune.prune_checkpoint(src, dst, sparsity=0.5, seed=0, progress=False)
    ref = _in_memory(src, sparsity=0.5)
    out = T.LlamaForCausalLM.from_pretrained(dst)
    a, b = ref.state_dict(), out.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype == torch.bfloat16
        assert torch.equal(a[k], b[k]), k
    # the table counts what is in the files: non-zero weights per pruned parameter, read by safetensors itself
    for row in table.itertuples():
        t = safetensors_torch.load_file(os.path.join(dst, row.shard))[row.parameter]
        assert row.total == t.numel() and row.kept == int((t != 0).sum())
    assert 0.45 < 1 - table.kept.sum() / table.total.sum() < 0.55


def test_headers_other_files_and_untouched_tensors_are_byte_identical(src, tmp_path):
    dst = str(tmp_path / "dst")
    table = graphprune.prune_checkpoint(src, dst, "magnitude", sparsity=0.7, seed=0, progress=False)
    assert sorted(os.listdir(dst)) == sorted(os.listdir(src))  # no progress file, no temporary left
    for name in os.listdir(src):
        if name.endswith(".safetensors"):
            assert _header(os.path.join(src, name)) == _header(os.path.join(dst, name))
            before = safetensors_torch.load_file(os.path.join(src, name))
            after = safetensors_torch.load_file(os.path.join(dst, name))
            for k in before:
                if k in set(table.parameter):  # pruned: zeros only where the magnitude is smallest
                    kept = after[k] != 0
                    assert torch.equal(after[k][kept], before[k][kept])
                else:  # norms: unchanged
                    assert torch.equal(before[k], after[k]), k
        else:
            with open(os.path.join(src, name), "rb") as f, open(os.path.join(dst, name), "rb") as g:
                assert f.read() == g.read(), name
    # magnitude with uniform allocation: each parameter keeps the round(0.3 n) largest |w| (a numpy reference)
    for row in table.itertuples():
        w = safetensors_torch.load_file(os.path.join(src, row.shard))[row.parameter].float().abs().flatten()
        k = round(0.3 * w.numel())
        assert row.kept == k
        kept = safetensors_torch.load_file(os.path.join(dst, row.shard))[row.parameter].flatten() != 0
        assert float(w[kept].min()) >= float(w[~kept].max())


@pytest.mark.parametrize("method", ["magnitude", "random"])
def test_global_allocation_reads_the_shards_twice_and_equals_memory(src, tmp_path, method):
    table = graphprune.prune_checkpoint(src, tmp_path / "dst", method, sparsity=0.6, seed=5, allocation="global",
                                        progress=False)
    ref = _in_memory(src, method=method, sparsity=0.6, seed=5, allocation="global")
    out = T.LlamaForCausalLM.from_pretrained(tmp_path / "dst")
    assert all(torch.equal(v, out.state_dict()[k]) for k, v in ref.state_dict().items())
    assert table.kept.sum() == round(0.4 * table.total.sum())  # one threshold: the total is exact ...
    assert table.sparsity.max() - table.sparsity.min() > 0.05  # ... and the layers differ
    if method == "magnitude":  # the threshold is global: every kept |w| >= every pruned |w| across all shards
        kept_min, pruned_max = float("inf"), 0.0
        for row in table.itertuples():
            w = safetensors_torch.load_file(os.path.join(src, row.shard))[row.parameter].float().abs()
            k = safetensors_torch.load_file(os.path.join(tmp_path / "dst", row.shard))[row.parameter] != 0
            kept_min, pruned_max = min(kept_min, float(w[k].min())), max(pruned_max, float(w[~k].max()))
        assert kept_min >= pruned_max


def test_tied_embeddings_and_a_single_file(tmp_path):
    torch.manual_seed(1)
    model = T.LlamaForCausalLM(_config(tied=True, layers=1))
    src = str(tmp_path / "src")
    model.save_pretrained(src)
    assert _shards(src) == ["model.safetensors"]
    dst = str(tmp_path / "dst")
    table = graphprune.prune_checkpoint(src, dst, "magnitude", sparsity=0.5, progress=False)
    assert "lm_head.weight" not in set(table.parameter)  # one parameter, stored and pruned once
    ref = _in_memory(src, method="magnitude", sparsity=0.5)
    out = T.LlamaForCausalLM.from_pretrained(dst)
    assert out.lm_head.weight.data_ptr() == out.model.embed_tokens.weight.data_ptr()
    assert all(torch.equal(v, out.state_dict()[k]) for k, v in ref.state_dict().items())


def test_plain_torch_model_with_model_and_inputs(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    src = tmp_path / "src"
    src.mkdir()
    safetensors_torch.save_file(dict(net.state_dict()), str(src / "model.safetensors"))
    x = torch.randn(1, 3, 6, 6)
    with torch.device("meta"):
        arch = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    graphprune.prune_checkpoint(src, tmp_path / "dst", "spectral", sparsity=0.6, seed=3, model=arch,
                                example_inputs=x, progress=False, width="all")
    graphprune.prune(net, x, "spectral", sparsity=0.6, seed=3, permanent=True, progress=False, width="all")
    out = safetensors_torch.load_file(str(tmp_path / "dst" / "model.safetensors"))
    assert all(torch.equal(v, out[k]) for k, v in net.state_dict().items())


def test_process_pool_writes_the_same_bytes_as_serial(src, tmp_path):
    graphprune.prune_checkpoint(src, tmp_path / "serial", sparsity=0.5, seed=2, progress=False)
    with cf.ProcessPoolExecutor(2, mp_context=mp.get_context("spawn")) as pool:
        graphprune.prune_checkpoint(src, tmp_path / "pool", sparsity=0.5, seed=2, progress=False, executor=pool)
    for name in os.listdir(src):
        with open(tmp_path / "serial" / name, "rb") as f, open(tmp_path / "pool" / name, "rb") as g:
            assert f.read() == g.read(), name


def test_an_interrupted_run_resumes_from_the_last_finished_shard(src, tmp_path, monkeypatch):
    dst = str(tmp_path / "dst")
    real, calls = ck._shard_job, []

    def flaky(job):
        calls.append(os.path.basename(job["src"]))
        if len(calls) == 2:
            raise KeyboardInterrupt  # the user stops the run during the second shard
        return real(job)

    monkeypatch.setattr(ck, "_shard_job", flaky)
    with pytest.raises(KeyboardInterrupt):
        graphprune.prune_checkpoint(src, dst, "magnitude", sparsity=0.5, progress=False)
    assert not os.path.exists(dst)  # never a half-written checkpoint under the final name
    partial = dst + ".partial"
    assert sorted(n for n in os.listdir(partial) if n.endswith(".safetensors")) == [calls[0]]
    with open(os.path.join(partial, ck.PROGRESS)) as f:
        assert list(json.load(f)["done"]) == [calls[0]]

    # other parameters may not reuse that work
    with pytest.raises(CheckpointError, match="resume=False"):
        graphprune.prune_checkpoint(src, dst, "magnitude", sparsity=0.6, progress=False)
    monkeypatch.setattr(ck, "_shard_job", lambda job: (calls.append(os.path.basename(job["src"])), real(job))[1])
    calls.clear()
    graphprune.prune_checkpoint(src, dst, "magnitude", sparsity=0.5, progress=False)
    assert len(calls) == len(_shards(src)) - 1  # the finished shard was not redone
    graphprune.prune_checkpoint(src, tmp_path / "whole", "magnitude", sparsity=0.5, progress=False)
    for name in os.listdir(src):
        with open(os.path.join(dst, name), "rb") as f, open(tmp_path / "whole" / name, "rb") as g:
            assert f.read() == g.read(), name


def _copy(src, to):
    import shutil

    shutil.copytree(src, to)
    return str(to)


@pytest.mark.parametrize("damage, match", [
    ("missing_shard", "missing 1 shard"),
    ("bad_index", "not a valid safetensors index"),
    ("wrong_shard", "does not hold it"),
    ("truncated", "not a readable safetensors file"),
    ("shape", "shape"),
    ("no_config", "config.json"),
])
def test_a_damaged_source_is_refused_before_anything_is_written(src, tmp_path, damage, match):
    bad = _copy(src, tmp_path / "bad")
    shards = _shards(bad)
    index = os.path.join(bad, "model.safetensors.index.json")
    if damage == "missing_shard":
        os.remove(os.path.join(bad, shards[1]))
    elif damage == "bad_index":
        with open(index, "w") as f:
            f.write("{not json")
    elif damage == "wrong_shard":
        with open(index) as f:
            idx = json.load(f)
        key = next(iter(idx["weight_map"]))
        idx["weight_map"][key] = next(s for s in shards if s != idx["weight_map"][key])
        with open(index, "w") as f:
            json.dump(idx, f)
    elif damage == "truncated":
        with open(os.path.join(bad, shards[0]), "r+b") as f:
            f.truncate(100)
    elif damage == "shape":
        with open(os.path.join(bad, "config.json")) as f:
            cfg = json.load(f)
        cfg["intermediate_size"] = 40
        with open(os.path.join(bad, "config.json"), "w") as f:
            json.dump(cfg, f)
    elif damage == "no_config":
        os.remove(os.path.join(bad, "config.json"))
    dst = tmp_path / "dst"
    with pytest.raises(CheckpointError, match=match):
        graphprune.prune_checkpoint(bad, dst, "magnitude", sparsity=0.5, progress=False)
    assert not os.path.exists(dst) and not os.path.exists(str(dst) + ".partial")


def test_refusals_name_the_way_out(src, tmp_path):
    (tmp_path / "exists").mkdir()
    with pytest.raises(CheckpointError, match="already exists"):
        graphprune.prune_checkpoint(src, tmp_path / "exists", sparsity=0.5, progress=False)
    with pytest.raises(CheckpointError, match="not a directory"):
        graphprune.prune_checkpoint(tmp_path / "nowhere", tmp_path / "d1", sparsity=0.5, progress=False)
    with pytest.raises(ParameterError, match="calibration"):
        graphprune.prune_checkpoint(src, tmp_path / "d2", "wanda", sparsity=0.5, progress=False)
    with pytest.raises(ParameterError, match="drop executor"):  # the mapped route runs in this process
        graphprune.prune_checkpoint(src, tmp_path / "d4", "wanda", sparsity=0.5, progress=False,
                                    calibration=torch.zeros(2, 8, dtype=torch.long), executor=cf.ThreadPoolExecutor(1))
    with pytest.raises(ParameterError, match="sparsity"):
        graphprune.prune_checkpoint(src, tmp_path / "d5", "magnitude", sparsity=1.5, progress=False)
    assert sorted(os.listdir(tmp_path)) == ["exists"]


def test_nan_in_a_shard_is_named(src, tmp_path):
    bad = _copy(src, tmp_path / "bad")
    name = _shards(bad)[0]
    tensors = safetensors_torch.load_file(os.path.join(bad, name))
    key = next(k for k in tensors if k.endswith("proj.weight") or k.endswith("embed_tokens.weight"))
    tensors[key][0, 0] = float("nan")
    safetensors_torch.save_file(tensors, os.path.join(bad, name), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="NaN"):
        graphprune.prune_checkpoint(bad, tmp_path / "dst", "magnitude", sparsity=0.5, progress=False)
    assert not os.path.exists(tmp_path / "dst")


def test_cli_prunes_a_model_directory(src, tmp_path, capsys):
    from graphprune.cli import main

    dst = str(tmp_path / "dst")
    assert main(["prune", src, "--sparsifier", "magnitude", "--sparsity", "0.5", "--out", dst, "--quiet"]) == 0
    assert "sparsity 0.5" in capsys.readouterr().out
    out = T.LlamaForCausalLM.from_pretrained(dst)
    ref = _in_memory(src, method="magnitude", sparsity=0.5)
    assert all(torch.equal(v, out.state_dict()[k]) for k, v in ref.state_dict().items())
    assert main(["prune", src, "--sparsity", "0.5", "--out", dst, "--quiet"]) == 2  # dst exists now
    assert "already exists" in capsys.readouterr().err
    for flag in (["--positive-paths"], ["--width", "all"]):  # spectral-only flags: a clear error, nothing written
        other = str(tmp_path / "other")
        assert main(["prune", src, "--sparsifier", "magnitude", *flag, "--out", other, "--quiet"]) == 2
        assert f"{flag[0]} applies to the spectral sparsifier only" in capsys.readouterr().err
        assert not os.path.exists(other)


def _ids(n=4, t=16, seed=0):
    return torch.randint(0, 96, (n, t), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("method, options", [
    ("wanda", {}), ("sparsegpt", {}), ("flow", {}), ("spectral", {"sparsity": 0.995}),
])
def test_whole_model_methods_run_mapped_and_equal_memory(src, tmp_path, method, options):
    """Data-aware methods (flow's dense target included) and spectral budgets that remove nodes run on the model
    mapped over copies of the shards: the result equals pruning the loaded model in memory, byte for byte."""
    sparsity = options.get("sparsity", 0.5)
    calib = None if method == "spectral" else _ids()
    table = graphprune.prune_checkpoint(src, tmp_path / "dst", method, sparsity=sparsity, seed=0,
                                        calibration=calib, progress=False)
    ref = _in_memory(src, method=method, sparsity=sparsity, **({} if calib is None else {"calibration": calib}))
    out = T.LlamaForCausalLM.from_pretrained(tmp_path / "dst")
    a, b = ref.state_dict(), out.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    changed = [k for k in a if not torch.equal(a[k], T.LlamaForCausalLM.from_pretrained(src).state_dict()[k])]
    assert changed  # something was pruned (and, for the repairing methods, rewritten)
    assert sorted(os.listdir(tmp_path / "dst")) == sorted(os.listdir(src))
    for row in table.itertuples():
        t = safetensors_torch.load_file(os.path.join(tmp_path / "dst", row.shard))[row.parameter]
        assert row.kept >= int((t != 0).sum())  # kept weights repaired to exactly 0 are rare, never more


def test_mapped_cnn_reads_batchnorm_statistics_from_the_checkpoint(tmp_path):
    torch.manual_seed(0)

    def net():
        return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))

    trained = net().eval()
    trained[1].running_mean.uniform_(-1, 1)  # statistics a fresh model does not have
    trained[1].running_var.uniform_(0.5, 2)
    (tmp_path / "src").mkdir()
    safetensors_torch.save_file(dict(trained.state_dict()), str(tmp_path / "src" / "model.safetensors"))
    x = torch.randn(16, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    graphprune.prune_checkpoint(tmp_path / "src", tmp_path / "dst", "sparsegpt", sparsity=0.5, model=net().eval(),
                                example_inputs=x[:1], calibration=x, progress=False)
    graphprune.prune(trained, x[:1], "sparsegpt", sparsity=0.5, calibration=x, permanent=True, progress=False)
    out = safetensors_torch.load_file(str(tmp_path / "dst" / "model.safetensors"))
    assert all(torch.equal(v, out[k]) for k, v in trained.state_dict().items())
