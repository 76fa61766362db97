"""Block-streaming core: prune() in place, packed and safetensors masks, two-pass global allocation, block views."""

import copy
import json
import logging
import math
import struct

import networkx as nx
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from models import build
from torch import nn

import graphprune
from graphprune.analysis import components, node_status
from graphprune.errors import MaskError, ParameterError
from graphprune.masks import (
    PackedMasks,
    load_masks_safetensors,
    save_masks_safetensors,
)
from graphprune.sparsify.sampling import top_flags, topk_mask


def _weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


# -- prune(): permanent streaming equals the torch.nn.utils.prune path -------------------------------------------------
@pytest.mark.parametrize("name", ["lenet5", "attention", "tied"])
@pytest.mark.parametrize("method,opts", [("spectral", {}), ("magnitude", {"allocation": "global"}),
                                         ("random", {"allocation": "erk"})])
def test_prune_permanent_equals_non_permanent(name, method, opts):
    model, x = build(name)
    before = _weights(model)
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    soft = graphprune.prune(a, x, method, sparsity=0.8, seed=5, progress=False, **opts)
    hard = graphprune.prune(b, x, method, sparsity=0.8, seed=5, permanent=True, progress=False, **opts)
    assert isinstance(hard, PackedMasks) and list(hard) == list(soft)
    for k in soft:
        assert torch.equal(hard[k], soft[k]), k  # byte for byte
    # the permanent model holds plain zeroed weights, no weight_orig; the soft one the same values through prune
    assert not any(n.endswith("_orig") for n, _ in b.named_parameters())
    pb = dict(b.named_parameters())
    for k, m in soft.items():
        assert torch.equal(pb[k].detach(), before[k] * m), k
        owner, _, attr = k.rpartition(".")
        soft_w = getattr(a.get_submodule(owner) if owner else a, attr)
        assert torch.equal(soft_w.detach(), before[k] * m), k
    assert hard.density() == pytest.approx(graphprune.from_model(b, x).with_masks(dict(hard)).density())


def test_prune_bfloat16_model_streams_without_float64_copy():
    model, x = build("mlp")
    ref = copy.deepcopy(model)  # float32 values equal to the bfloat16 ones below
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    bf = copy.deepcopy(ref).to(torch.bfloat16)
    want = graphprune.sparsify(graphprune.from_model(ref, x), "magnitude", sparsity=0.6)
    got = graphprune.prune(bf, x.to(torch.bfloat16), "magnitude", sparsity=0.6, permanent=True, progress=False)
    for k in want:
        assert torch.equal(got[k], want[k])
        assert bf.get_parameter(k).dtype == torch.bfloat16


def test_prune_bad_input_leaves_model_untouched():
    model, x = build("mlp")
    before = _weights(model)
    with pytest.raises(ParameterError, match="'sparsity' parameter"):
        graphprune.prune(model, x, "magnitude", sparsity=1.5, permanent=True, progress=False)
    with pytest.raises(ParameterError, match="'model' parameter of prune"):
        graphprune.prune("not a model", x, "magnitude", sparsity=0.5)
    with pytest.raises(ParameterError, match="'permanent' parameter"):
        graphprune.prune(model, x, "magnitude", sparsity=0.5, permanent="yes")
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_progress_false_prints_nothing_true_shows_a_bar(capfd):
    model, x = build("mlp")
    graphprune.prune(copy.deepcopy(model), x, "spectral", sparsity=0.5, permanent=True, progress=False)
    graphprune.prune(copy.deepcopy(model), x, "magnitude", sparsity=0.5, progress=False)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    graphprune.prune(copy.deepcopy(model), x, "magnitude", sparsity=0.5, permanent=True, progress=True)
    out, err = capfd.readouterr()
    assert "block" in err  # tqdm's bar over blocks


# -- packed masks ------------------------------------------------------------------------------------------------------
@given(st.lists(st.tuples(st.integers(1, 9), st.integers(1, 9), st.floats(0, 1)), min_size=1, max_size=4),
       st.integers(0, 2**31))
def test_packed_masks_round_trip(shapes, seed):
    g = torch.Generator().manual_seed(seed)
    masks = {f"p{i}.weight": torch.rand(a, b, generator=g) < q for i, (a, b, q) in enumerate(shapes)}
    pm = PackedMasks(masks)
    assert list(pm) == list(masks) and len(pm) == len(masks)
    for k, m in masks.items():
        assert pm[k].dtype == torch.bool and torch.equal(pm[k], m)
    assert pm.nbytes == sum(math.ceil(m.numel() / 8) for m in masks.values())
    kept = sum(int(m.sum()) for m in masks.values())
    assert pm.density() == pytest.approx(kept / sum(m.numel() for m in masks.values()))


def test_packed_masks_refuse_non_bool_and_bad_sizes():
    with pytest.raises(MaskError, match="torch.bool"):
        PackedMasks({"w": torch.ones(2, 2)})
    with pytest.raises(MaskError, match="needs 1"):
        PackedMasks.from_packed({"w": np.zeros(3, dtype=np.uint8)}, {"w": (2, 2)})


# -- safetensors -------------------------------------------------------------------------------------------------------
def _masks():
    g = torch.Generator().manual_seed(0)
    return {"a.weight": torch.rand(5, 7, generator=g) < 0.3, "b.weight": torch.rand(3, 2, 3, 3, generator=g) < 0.5,
            "c.weight": torch.ones(1, 1, dtype=torch.bool)}


def test_safetensors_round_trip_and_independent_reader(tmp_path):
    from safetensors import safe_open

    masks = _masks()
    path = tmp_path / "m.safetensors"
    save_masks_safetensors(masks, path)
    back = load_masks_safetensors(path)
    assert list(back) == list(masks)
    assert all(torch.equal(back[k], masks[k]) for k in masks)
    # the file is plain safetensors: the reference reader sees one uint8 entry per parameter and the metadata
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        assert meta["format"] == "graphprune-masks" and meta["version"] == "1"
        assert json.loads(meta["shapes"]) == {k: list(v.shape) for k, v in masks.items()}
        for k, m in masks.items():
            t = f.get_tensor(k)
            assert t.dtype == torch.uint8
            bits = np.unpackbits(t.numpy(), count=m.numel()).astype(bool)
            assert np.array_equal(bits, m.reshape(-1).numpy())
    # PackedMasks save directly, and the dispatcher picks the format from the name or the header
    graphprune.save_masks(back, tmp_path / "again.safetensors")
    assert all(torch.equal(graphprune.load_masks(tmp_path / "again.safetensors")[k], masks[k]) for k in masks)
    graphprune.save_masks(masks, tmp_path / "plain.pt")
    assert all(torch.equal(graphprune.load_masks(tmp_path / "plain.pt")[k], masks[k]) for k in masks)
    (tmp_path / "noext").write_bytes(path.read_bytes())
    assert isinstance(graphprune.load_masks(tmp_path / "noext"), PackedMasks)


def test_safetensors_bad_files(tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(MaskError, match="No mask file"):
        load_masks_safetensors(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(MaskError, match="not a safetensors file"):
        load_masks_safetensors(junk)
    other = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(3)}, str(other))
    with pytest.raises(MaskError, match="not a graphprune mask file"):
        load_masks_safetensors(other)
    newer = tmp_path / "newer.safetensors"
    save_file({"w": torch.zeros(1, dtype=torch.uint8)}, str(newer),
              metadata={"format": "graphprune-masks", "version": "99", "shapes": json.dumps({"w": [2]})})
    with pytest.raises(MaskError, match="version 99"):
        load_masks_safetensors(newer)
    wrong = tmp_path / "wrong.safetensors"
    save_file({"w": torch.zeros(1, dtype=torch.uint8)}, str(wrong),
              metadata={"format": "graphprune-masks", "version": "1", "shapes": json.dumps({"w": [4, 4]})})
    with pytest.raises(MaskError, match="needs 2"):
        load_masks_safetensors(wrong)
    with pytest.raises(MaskError, match="torch.bool"):
        save_masks_safetensors({"w": torch.ones(2)}, tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()  # checked before the file is opened
    with pytest.raises(ParameterError, match="'format' parameter"):
        graphprune.save_masks(_masks(), tmp_path / "y", format="zip")


def test_safetensors_header_is_aligned(tmp_path):
    path = tmp_path / "m.safetensors"
    save_masks_safetensors(_masks(), path)
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0 and json.loads(raw[8 : 8 + n])["__metadata__"]["format"] == "graphprune-masks"


# -- global allocation and top-k against naive references ------------------------------------------------------------
def _naive_global_counts(scores, d):
    allv = np.concatenate(scores)
    K = round(d * allv.size)
    order = np.argsort(-allv, kind="stable")[:K]
    return np.bincount(np.searchsorted(np.cumsum([s.size for s in scores]), order, side="right"),
                       minlength=len(scores))


@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.99])
def test_global_two_pass_equals_concatenate_and_argsort(sparsity):
    model, x = build("lenet5")
    G = graphprune.from_model(model, x)
    H = G.with_masks(graphprune.sparsify(G, "random", sparsity=0.3, seed=2))
    with torch.no_grad():  # many exact ties across blocks: round the weights to a coarse grid
        for p in model.parameters():
            p.copy_((p * 20).round() / 20)
    masks = graphprune.sparsify(H, "magnitude", sparsity=sparsity, allocation="global")
    scores = []
    for b in H.weight_blocks:
        s = b.weight.detach().abs().double().reshape(-1).numpy().copy()
        s[~H.block_mask(b).reshape(-1).numpy()] = -np.inf
        scores.append(s)
    want = _naive_global_counts(scores, 1 - sparsity)
    avail = [int(H.block_mask(b).sum()) for b in H.weight_blocks]
    got = [int(masks[b.param].sum()) for b in H.weight_blocks]
    assert got == [min(int(w), a) for w, a in zip(want, avail)]


@given(st.lists(st.sampled_from([0.0, -0.0, 1.0, 2.5, -1.0, np.inf, -np.inf, np.nan, 1e-300, 3.0]), min_size=1,
                max_size=300), st.integers(0, 400))
def test_top_flags_equals_stable_argsort(values, k):
    x = np.array(values)
    want = np.zeros(x.size, dtype=bool)
    want[np.argsort(-x, kind="stable")[: max(k, 0)]] = True
    assert np.array_equal(top_flags(x, k, chunk=7), want)


def test_top_flags_with_nan_and_ties_equals_stable_argsort():
    rng = np.random.default_rng(1)
    for n in (1, 9, 1000):
        x = rng.integers(-2, 3, n).astype(float)
        x[rng.random(n) < 0.3] = np.nan
        x[rng.random(n) < 0.1] = -np.inf
        order = np.argsort(-x, kind="stable")
        for k in sorted({0, 1, n // 2, int(np.count_nonzero(~np.isnan(x))), n - 1, n}):
            want = np.zeros(n, dtype=bool)
            want[order[:k]] = True
            assert np.array_equal(top_flags(x, k), want), (n, k)


def test_top_flags_on_large_arrays_one_pass_equals_stable_argsort():
    """Above 2**21 values the threshold is bracketed from a sample and found in one pass (falling back to the
    histogram when the bracket misses); either way the flags are those of a stable argsort: ties by position,
    NaN lowest, -inf above NaN; bracket hit on the usual cases, checked directly."""
    from graphprune.sparsify.sampling import _top_flags_sampled

    rng = np.random.default_rng(0)
    n = (1 << 21) + 12_345
    x = np.round(np.log(rng.random(n)) / rng.random(n), 2)  # keys like the sampler's, with many ties
    x[rng.random(n) < 0.3] = np.nan
    x[:5] = -np.inf
    order = np.argsort(-x, kind="stable")
    for k in (1, 1000, n // 3, n // 2, int(np.count_nonzero(~np.isnan(x))), n - 10):
        want = np.zeros(n, dtype=bool)
        want[order[:k]] = True
        assert np.array_equal(top_flags(x, k, chunk=1 << 18), want), k
        if 1000 <= k <= n // 2:
            keep = np.zeros(n, dtype=bool)
            assert _top_flags_sampled(x, k, keep, 1 << 18) and np.array_equal(keep, want), k


def test_topk_mask_matches_stable_argsort_on_ties():
    g = torch.Generator().manual_seed(0)
    s = torch.randint(0, 5, (40, 30), generator=g).double()
    avail = torch.rand(40, 30, generator=g) < 0.7
    for k in (0, 1, 17, 500, int(avail.sum())):
        got = topk_mask(s, avail, k)
        ref = s.reshape(-1).numpy().copy()
        ref[~avail.reshape(-1).numpy()] = -np.inf
        want = np.zeros(ref.size, dtype=bool)
        want[np.argsort(-ref, kind="stable")[:k]] = True
        assert np.array_equal(got.reshape(-1).numpy(), want)


# -- block views against naive per-edge references -------------------------------------------------------------------
@pytest.mark.parametrize("name", ["lenet5", "depthwise", "small_resnet", "attention", "concat", "tied"])
def test_degrees_and_node_status_match_edge_arrays(name):
    model, x = build(name)
    G = graphprune.from_model(model, x)
    H = G.with_masks(graphprune.sparsify(G, "random", sparsity=0.9, seed=1))
    e = H.edge_arrays()
    n = H.num_nodes
    ind = np.bincount(e["dst"], minlength=n)
    outd = np.bincount(e["src"], minlength=n)
    strength = np.bincount(e["src"], weights=e["weight"], minlength=n) + np.bincount(e["dst"], weights=e["weight"],
                                                                                    minlength=n)
    assert np.array_equal(H.degrees("in"), ind) and np.array_equal(H.degrees("out"), outd)
    assert np.allclose(H.degrees("all", weighted=True), strength)
    st_ = node_status(H)
    roles = np.repeat([p.role for p in H.partitions], [p.size for p in H.partitions])
    assert np.array_equal(st_["sink"], (ind > 0) & (outd == 0) & (roles != "output"))
    assert np.array_equal(st_["isolated"], (ind == 0) & (outd == 0))
    # components: same partition of the nodes as networkx on the per-edge arrays
    g = nx.Graph()
    g.add_nodes_from(range(n))
    g.add_edges_from(zip(e["src"].tolist(), e["dst"].tolist()))
    lab = components(H)
    comps = list(nx.connected_components(g))
    assert len(set(lab.tolist())) == len(comps)
    assert all(len({int(lab[i]) for i in c}) == 1 for c in comps)


def test_components_of_a_graph_with_1e5_components():
    emb = nn.Embedding(100_000, 4)
    G = graphprune.from_model(emb, torch.zeros(1, 3, dtype=torch.long))
    keep = torch.zeros(100_000, 4, dtype=torch.bool)
    keep[:50, 0] = True  # 50 tokens share output 0; 30 share output 1; the rest and outputs 2, 3 are alone
    keep[50:80, 1] = True
    lab = components(G, masks={"weight": keep})
    # by hand: one component {50 tokens, out 0}, one {30 tokens, out 1}, 99 920 lone tokens, outs 2 and 3
    assert len(np.unique(lab)) == 2 + (100_000 - 80) + 2
    assert len(set(lab[:50].tolist())) == 1 and lab[0] != lab[50]


# -- the resistance engine at scale ----------------------------------------------------------------------------------
def test_exact_that_cannot_fit_raises_before_allocating(monkeypatch, caplog):
    import graphprune.resistance as res

    G = graphprune.from_model(nn.Linear(64, 32), torch.randn(1, 64))
    monkeypatch.setattr(res, "available_memory", lambda device=None: 1000)

    def no_alloc(*a, **k):
        raise AssertionError("the biadjacency was built before the memory check")

    monkeypatch.setattr(type(G), "biadjacency", no_alloc)
    with pytest.raises(ParameterError, match=r"block '(linear|weight)'.*needs about .* GiB.*method='degree'"):
        graphprune.effective_resistance(G, G.blocks[0], method="exact")
    monkeypatch.undo()
    monkeypatch.setattr(res, "available_memory", lambda device=None: 1000)
    with caplog.at_level(logging.INFO, logger="graphprune"):
        R, how = graphprune.effective_resistance(G, G.blocks[0], method="auto", return_method=True)
    assert how == "degree" and "would need" in caplog.text
    B = G.block(G.blocks[0].name).weight.detach().abs().double()
    want = 1 / B.sum(1, keepdim=True) + 1 / B.sum(0, keepdim=True)  # the degree approximation by hand
    assert torch.allclose(R, want)


def test_torch_engine_on_cpu_matches_scipy_engine():
    G = graphprune.from_model(nn.Linear(40, 25), torch.randn(1, 40))
    b = G.blocks[0]
    a = graphprune.effective_resistance(G, b, method="exact")
    t = graphprune.effective_resistance(G, b, method="exact", backend="torch")
    assert torch.allclose(a, t, rtol=1e-8, atol=1e-10)
    m1 = graphprune.sparsify(G, "spectral", sparsity=0.5, seed=0, backend="torch")
    assert int(m1[b.param].sum()) == 500


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_spectral_runs_where_the_weights_live_cuda():
    net = nn.Linear(64, 48).cuda()
    G = graphprune.from_model(net, torch.randn(1, 64, device="cuda"))
    sp = graphprune.get_sparsifier("spectral")(sparsity=0.5, seed=0)
    masks = sp.sparsify(G)
    assert int(masks["weight"].sum()) == 64 * 48 // 2
    cpu = graphprune.effective_resistance(graphprune.from_model(net.cpu(), torch.randn(1, 64)), "linear",
                                          method="exact", dtype=torch.float32)
    R = graphprune.effective_resistance(G, "linear", method="exact", dtype=torch.float32)
    assert R.device.type == "cuda" and torch.allclose(R.cpu(), cpu, rtol=1e-3)


def test_blas_threads_follow_torch():
    from threadpoolctl import threadpool_info

    from graphprune.resistance import blas_threads

    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with blas_threads():
            blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
            assert all(i["num_threads"] == 1 for i in blas)
    finally:
        torch.set_num_threads(old)


# -- per-parameter sparsities: a table on the masks and one log line per prune call ---------------------------------
class _Decoder(nn.Module):
    """A one-layer decoder with Llama's parameter names (embedding, attention, MLP, head)."""

    def __init__(self, vocab=50, d=16, ff=40):
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, d)
        self.self_attn = nn.ModuleDict({n: nn.Linear(d, d, bias=False) for n in ("q_proj", "k_proj", "v_proj",
                                                                                 "o_proj")})
        self.mlp = nn.ModuleDict({"up_proj": nn.Linear(d, ff, bias=False), "down_proj": nn.Linear(ff, d, bias=False)})
        self.lm_head = nn.Linear(d, vocab, bias=False)

    def forward(self, ids):
        x = self.embed_tokens(ids)
        a = self.self_attn
        x = x + a["o_proj"](a["q_proj"](x) * a["k_proj"](x) + a["v_proj"](x))
        x = x + self.mlp["down_proj"](torch.relu(self.mlp["up_proj"](x)))
        return self.lm_head(x)


def test_mask_table_counts_by_hand_and_kinds():
    """The table's counts against numpy counts of the same masks (packed and plain), kinds by name."""
    from graphprune.masks import mask_table

    torch.manual_seed(0)
    model, ids = _Decoder(), torch.randint(0, 50, (1, 6))
    packed = graphprune.prune(model, ids, "spectral", sparsity=0.5, seed=0, permanent=True, progress=False)
    plain = {k: packed[k] for k in packed}
    for t in (packed.table(), mask_table(plain), graphprune.mask_table(packed)):
        assert list(t.columns) == ["parameter", "kind", "shape", "kept", "total", "sparsity"]
        assert list(t["parameter"]) == list(packed)
        for row in t.itertuples():
            w = model.get_parameter(row.parameter).detach().numpy()
            assert row.shape == w.shape and row.total == w.size
            assert row.kept == int(np.count_nonzero(plain[row.parameter].numpy()))
            assert row.sparsity == pytest.approx(1 - row.kept / w.size)
        kinds = dict(zip(t["parameter"], t["kind"]))
        assert kinds["embed_tokens.weight"] == "embedding" and kinds["lm_head.weight"] == "head"
        assert kinds["self_attn.q_proj.weight"] == "attention" and kinds["mlp.up_proj.weight"] == "mlp"
    with pytest.raises(MaskError, match="torch.bool"):
        mask_table({"w": torch.ones(3)})
    with pytest.raises(MaskError, match="'masks' parameter"):
        mask_table([torch.ones(3, dtype=torch.bool)])


def test_prune_logs_one_line_with_per_kind_sparsities(caplog):
    """One INFO line per prune call; its per-kind figures are the kept counts of the weights themselves."""
    torch.manual_seed(1)
    model, ids = _Decoder(), torch.randint(0, 50, (1, 6))
    with caplog.at_level(logging.INFO, logger="graphprune"):
        graphprune.prune(model, ids, "spectral", sparsity=0.5, seed=0, permanent=True, progress=False)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("prune:")]
    assert len(lines) == 1
    groups = {"attention": "self_attn.", "mlp": "mlp.", "embedding": "embed_tokens.", "head": "lm_head."}
    for kind, prefix in groups.items():
        ws = [p.detach() for n, p in model.named_parameters() if n.startswith(prefix)]
        zero = sum(int((w == 0).sum()) for w in ws) / sum(w.numel() for w in ws)
        assert f"{kind} {zero:.4f}" in lines[0], (kind, lines[0])
