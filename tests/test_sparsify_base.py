import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from models import build
from scipy import stats

import graphprune
from graphprune.errors import GraphPruneError, ParameterError, UnknownSparsifierError
from graphprune.sparsify import Sparsifier
from graphprune.sparsify.allocation import igq_counts
from graphprune.sparsify.base import erk_counts


@pytest.fixture(scope="module")
def lenet():
    model, x = build("lenet5")
    return graphprune.from_model(model, x)


@pytest.mark.parametrize("method", ["random", "magnitude"])
def test_exact_count_per_parameter(lenet, method):
    masks = graphprune.sparsify(lenet, method, sparsity=0.9, seed=0)
    for name, m in masks.items():
        assert int(m.sum()) == round(0.1 * m.numel()), name
        assert m.dtype == torch.bool and m.shape == lenet.param_shapes[name]


def test_same_seed_same_mask_different_seed_different(lenet):
    a = graphprune.sparsify(lenet, "random", sparsity=0.8, seed=11)
    b = graphprune.sparsify(lenet, "random", sparsity=0.8, seed=11)
    c = graphprune.sparsify(lenet, "random", sparsity=0.8, seed=12)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    g1 = torch.Generator().manual_seed(3)
    g2 = torch.Generator().manual_seed(3)
    d = graphprune.sparsify(lenet, "random", sparsity=0.8, seed=g1)
    e = graphprune.sparsify(lenet, "random", sparsity=0.8, seed=g2)
    assert all(torch.equal(d[k], e[k]) for k in d)
    f = graphprune.sparsify(lenet, "random", sparsity=0.8, seed=np.random.default_rng(4))
    assert f.keys() == a.keys()


def test_random_is_uniform_chi_square():
    model, x = build("mlp")
    G = graphprune.from_model(model, x)
    counts = np.zeros(16 * 20)
    runs = 400
    for seed in range(runs):
        counts += graphprune.sparsify(G, "random", density=0.25, seed=seed)["0.weight"].reshape(-1).numpy()
    expected = np.full_like(counts, runs * 0.25)
    _, p = stats.chisquare(counts, expected)
    assert p > 1e-3


def test_magnitude_keeps_largest(lenet):
    masks = graphprune.sparsify(lenet, "magnitude", sparsity=0.5, seed=0)
    w = lenet.block("fc1").weight.abs()
    assert w[masks["fc1.weight"]].min() >= w[~masks["fc1.weight"]].max()


@given(st.floats(0.0, 0.95), st.floats(0.0, 0.95), st.integers(0, 2**31))
def test_masks_only_shrink_and_density_is_hit(s1, s2, seed):
    model, x = build("mlp")
    G = graphprune.from_model(model, x)
    H = G.with_masks(graphprune.sparsify(G, "random", sparsity=s1, seed=seed))
    m2 = graphprune.sparsify(H, "random", sparsity=s2, seed=seed + 1)
    for k, m in m2.items():
        assert not bool((m & ~H.param_mask(k)).any())  # nothing revived
        want = min(round((1 - s2) * m.numel()), int(H.param_mask(k).sum()))
        assert int(m.sum()) == want


def test_global_allocation_magnitude_is_one_threshold(lenet):
    masks = graphprune.sparsify(lenet, "magnitude", sparsity=0.9, allocation="global")
    kept = torch.cat([lenet.block(b.name).weight.abs().reshape(-1)[masks[b.param].reshape(-1)]
                      for b in lenet.weight_blocks])
    dropped = torch.cat([lenet.block(b.name).weight.abs().reshape(-1)[~masks[b.param].reshape(-1)]
                         for b in lenet.weight_blocks])
    assert kept.min() >= dropped.max()
    assert sum(int(m.sum()) for m in masks.values()) == round(0.1 * lenet.num_weight_edges)


def test_erk_allocation_against_hand_formula(lenet):
    """LeNet-5's weights: conv1 (6,1,5,5), conv2 (16,6,5,5), fc1 (120,400), fc2 (84,120), fc3 (10,84); 61470 in
    all. ERK keeps eps * sum(shape) edges per block, eps = budget / sum over blocks of sum(shape).

    d = 0.1: budget 6147, sum of sum(shape) = 17 + 32 + 520 + 204 + 94 = 867, eps = 7.08997; no block saturates
    (conv1: 7.09 * 17 / 150 = 0.80), so counts = round(eps * [17, 32, 520, 204, 94]).
    d = 0.5: eps = 30735 / 867 = 35.45 saturates conv1 (4.0) and fc3 (3.97): both dense (150 + 840); then
    eps = (30735 - 990) / (32 + 520 + 204) = 39.3452, counts round(eps * [32, 520, 204]).
    """
    by_param = {b.param: b.name for b in lenet.weight_blocks}
    names = [by_param[p] for p in ("conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight", "fc3.weight")]
    counts = erk_counts(lenet.weight_blocks, 0.1)
    assert [counts[n] for n in names] == [121, 227, 3687, 1446, 666]
    counts = erk_counts(lenet.weight_blocks, 0.5)
    assert [counts[n] for n in names] == [150, 1259, 20460, 8026, 840]


def _sized(*sizes):
    from types import SimpleNamespace
    return [SimpleNamespace(name=f"b{i}", num_edges=n) for i, n in enumerate(sizes)]


def test_igq_counts_by_hand():
    """Ideal Gas Quotas: a block of n weights keeps n / (1 + F n). Blocks of 4 and 12 at F = 1/4 keep 4/2 = 2 and
    12/4 = 3, so density 5/16 gives (2, 3); blocks of 10 and 90 at F = 1/10 keep 10/2 = 5 and 90/10 = 9
    (density 14/100); equal blocks split the budget equally."""
    assert igq_counts(_sized(4, 12), 5 / 16) == {"b0": 2, "b1": 3}
    assert igq_counts(_sized(10, 90), 0.14) == {"b0": 5, "b1": 9}
    assert igq_counts(_sized(50, 50, 50), 0.2) == {"b0": 10, "b1": 10, "b2": 10}
    assert igq_counts(_sized(4, 12), 1.0) == {"b0": 4, "b1": 12}
    assert igq_counts(_sized(4, 12), 0.0) == {"b0": 0, "b1": 0}


def test_igq_counts_against_a_root_finder():
    """F from scipy's brentq on sum n / (1 + F n) = K; the counts are those values rounded, summing to K."""
    from scipy.optimize import brentq
    sizes = [40, 640, 20480, 640]
    for d in (0.3, 0.1, 0.01, 0.001):
        K = round(d * sum(sizes))
        F = brentq(lambda F, K=K: sum(n / (1 + F * n) for n in sizes) - K, 0.0, 1e6)
        want = [n / (1 + F * n) for n in sizes]
        got = igq_counts(_sized(*sizes), d)
        assert sum(got.values()) == K
        for i, w in enumerate(want):
            assert abs(got[f"b{i}"] - w) < 1.0, (d, i, got, want)
    # at extreme sparsity every block keeps about the same count (1 / F)
    got = igq_counts(_sized(*sizes), 0.001)
    assert max(got.values()) - min(got.values()) <= 2


def test_igq_allocation_in_a_sparsifier():
    """An MLP 1-4-3 has weight blocks of 4 and 12 weights; at density 5/16 IGQ keeps 2 and 3 (by hand above)."""
    model = torch.nn.Sequential(torch.nn.Linear(1, 4, bias=False), torch.nn.ReLU(), torch.nn.Linear(4, 3, bias=False))
    G = graphprune.from_model(model, torch.randn(2, 1))
    for method, extra in (("random", {}), ("magnitude", {}), ("spectral", {"width": "all"})):
        masks = graphprune.sparsify(G, method, density=5 / 16, allocation="igq", seed=0, **extra)
        assert [int(masks[p].sum()) for p in ("0.weight", "2.weight")] == [2, 3], method


def test_dict_allocation_and_keep_dense(lenet):
    masks = graphprune.sparsify(lenet, "random", sparsity=0.9, seed=0, allocation={"conv*": 0.5},
                                keep_dense=["fc3.weight"])
    assert masks["conv1.weight"].float().mean().item() == pytest.approx(0.5, abs=0.01)
    assert masks["fc3.weight"].all()
    assert masks["fc1.weight"].float().mean().item() == pytest.approx(0.1, abs=0.001)


@pytest.mark.parametrize("kwargs, match", [
    (dict(sparsity=1.5), r"The 'sparsity' parameter of RandomSparsifier must be a float in \[0, 1\). Got 1.5 instead."),
    (dict(sparsity=-0.1), "'sparsity'"),
    (dict(density=0.0), "'density'"),
    (dict(sparsity=0.5, density=0.5), "exactly one"),
    (dict(sparsity=0.5, seed="zero"), "'seed' parameter"),
    (dict(sparsity=0.5, seed=None), "'seed' parameter"),
    (dict(sparsity=0.5, allocation="erdos"), "'allocation'"),
    (dict(sparsity=0.5, keep_dense="fc1.weight"), "'keep_dense'"),
])
def test_bad_arguments(lenet, kwargs, match):
    with pytest.raises(ParameterError, match=match):
        graphprune.sparsify(lenet, "random", **kwargs)


def test_unknown_name_lists_known(lenet):
    with pytest.raises(UnknownSparsifierError, match="Known sparsifiers: .*magnitude.*random"):
        graphprune.sparsify(lenet, "spectrall", sparsity=0.5)


def test_nan_weights_rejected_and_graph_unchanged():
    model, x = build("mlp")
    G = graphprune.from_model(model, x)
    with torch.no_grad():
        model[2].weight[0, 0] = float("nan")
    with pytest.raises(ParameterError, match="NaN or inf"):
        graphprune.sparsify(G, "random", sparsity=0.5)
    assert not G.is_masked


def test_not_a_graph():
    with pytest.raises(ParameterError, match=r"'graph' parameter of RandomSparsifier\.sparsify must be a "
                                             r"MultipartiteGraph\. Got a Linear instead\. Export the model first"):
        graphprune.sparsify(torch.nn.Linear(2, 2), "random", sparsity=0.5)


def test_misbehaving_plugin_is_caught(lenet):
    class Greedy(Sparsifier):
        name = "greedy-test"

        def compute_mask(self, ctx, k):
            return torch.ones_like(ctx.available)

    with pytest.raises(GraphPruneError, match="kept .* edges"):
        Greedy(sparsity=0.5).sparsify(lenet)


def test_graph_without_prunable_block():
    from graphprune.graph import Block, MultipartiteGraph, Partition

    parts = [Partition("in", 3, "input"), Partition("out", 3, "output")]
    idx = np.arange(3)
    G = MultipartiteGraph(parts, [Block("skip", "in", "out", kind="identity", src_index=idx, dst_index=idx,
                                       meta={"n_src": 3, "n_dst": 3})])
    with pytest.raises(GraphPruneError, match="no prunable"):
        graphprune.sparsify(G, "random", sparsity=0.5)


def test_identity_blocks_never_pruned():
    model, x = build("small_resnet")
    G = graphprune.from_model(model, x)
    H = G.with_masks(graphprune.sparsify(G, "magnitude", sparsity=0.99))
    ident = sum(b.num_edges for b in G.blocks if not b.is_weight)
    assert ident > 0
    assert (H.edges_frame().kind == "identity").sum() == ident


# -- the streaming driver: Sparsifier.iter_masks --------------------------------------------------------------------
def _naive_magnitude(G, d, keep_dense):
    """Uniform magnitude masks by a plain loop: each unit not kept dense keeps min(round(d n), available) of its
    available edges, largest |w| first, ties by position (a stable argsort)."""
    masks = G.masks
    seen = set()
    for b in G.weight_blocks:
        if (b.param, b.param_slice) in seen or b.param in keep_dense:
            continue
        seen.add((b.param, b.param_slice))
        avail = G.block_mask(b).reshape(-1).numpy()
        w = b.weight.detach().abs().reshape(-1).double().numpy()
        order = [i for i in np.argsort(-w, kind="stable") if avail[i]]
        keep = np.zeros(w.size, dtype=bool)
        keep[order[: min(round(d * b.num_edges), len(order))]] = True
        rows = slice(*b.param_slice) if b.param_slice is not None else slice(None)
        masks[b.param][rows] &= torch.from_numpy(keep).reshape(b.weight.shape)
    return masks


@pytest.mark.parametrize("name", ["attention", "tied", "small_resnet"])
def test_iter_masks_equal_sparsify_and_a_plain_loop(name):
    """Sliced (fused q/k/v) and tied parameters, an existing mask and a parameter kept dense: by="block" gives
    each pruned unit once in block order, by="param" every parameter's full mask in graph.params order, and both
    equal sparsify() and a plain per-unit loop."""
    model, x = build(name)
    G = graphprune.from_model(model, x)
    G = G.with_masks(graphprune.sparsify(G, "random", sparsity=0.3, seed=1))
    dense = G.params[-1]
    sp = graphprune.get_sparsifier("magnitude")(sparsity=0.6, keep_dense=[dense])
    want = _naive_magnitude(G, 0.4, {dense})
    got = sp.sparsify(G)
    assert list(got) == G.params and all(torch.equal(got[k], want[k]) for k in want)
    by_param = list(sp.iter_masks(G, by="param"))
    assert [n for n, _ in by_param] == G.params and all(torch.equal(m, want[n]) for n, m in by_param)
    blocks = list(sp.iter_masks(G))
    units = list(dict.fromkeys((b.param, b.param_slice) for b in G.weight_blocks if b.param != dense))
    assert [(b.param, b.param_slice) for b, _ in blocks] == units
    for b, m in blocks:
        rows = slice(*b.param_slice) if b.param_slice is not None else slice(None)
        assert m.shape == b.weight.shape and torch.equal(m, want[b.param][rows])


def test_iter_masks_streams_one_block_at_a_time():
    """Nothing is computed before the first block is asked for; each block is scored only after the previous
    one was handed out; release() runs at the end, and also when the caller stops early."""
    events = []

    class Recording(Sparsifier):
        def prepare(self, graph):
            events.append("prepare")

        def release(self):
            events.append("release")

        def score(self, ctx):
            events.append(f"score {ctx.block.name}")
            return ctx.weight.abs()

    model, x = build("mlp")
    G = graphprune.from_model(model, x)
    names = [b.name for b in G.weight_blocks]
    it = Recording(sparsity=0.5).iter_masks(G)
    assert events == []
    for b, _ in it:
        events.append(f"got {b.name}")
    assert events == ["prepare"] + [e for n in names for e in (f"score {n}", f"got {n}")] + ["release"]
    events.clear()
    for name, _ in Recording(sparsity=0.5).iter_masks(G, by="param"):
        events.append(f"got {name}")
    assert events == ["prepare"] + [e for b in G.weight_blocks for e in (f"score {b.name}", f"got {b.param}")] + [
        "release"]
    events.clear()
    it = Recording(sparsity=0.5).iter_masks(G, in_place=True)
    next(it)
    it.close()
    assert events == ["prepare", f"score {names[0]}", "release"]


def test_iter_masks_checks_its_arguments_when_called():
    model, x = build("mlp")
    G = graphprune.from_model(model, x)
    sp = graphprune.get_sparsifier("magnitude")(sparsity=0.5)
    with pytest.raises(ParameterError, match="'by' parameter"):
        sp.iter_masks(G, by="row")
    with pytest.raises(ParameterError, match="'in_place' parameter"):
        sp.iter_masks(G, in_place=1)
    with pytest.raises(ParameterError, match="'keep_dense'"):
        graphprune.get_sparsifier("magnitude")(sparsity=0.5, keep_dense=["nothing*"]).iter_masks(G)
    with pytest.raises(ParameterError, match="'sparsity'"):
        graphprune.get_sparsifier("magnitude")(sparsity=1.5).iter_masks(G)


def test_iter_masks_of_rounds_over_the_whole_graph():
    """spectral with iterations=2 cannot stream (each round needs the whole graph): iter_masks computes the masks
    first and yields each pruned unit's rows of them."""
    model, x = build("mlp")
    G = graphprune.from_model(model, x)
    sp = graphprune.get_sparsifier("spectral")(density=0.1, seed=2, iterations=2)
    want = sp.sparsify(G)
    blocks = list(sp.iter_masks(G))
    assert [b.name for b, _ in blocks] == [b.name for b in G.weight_blocks]
    assert all(torch.equal(m, want[b.param]) for b, m in blocks)


def _naive_weighted_sample(weights, k, rng, cand):
    """Successive sampling by a plain loop: one uniform per positive-weight candidate in position order, key
    log(u) / (w / sum of those w), the k largest keys (ties to the earlier position), then rng.choice among the
    remaining candidates."""
    pos = [i for i in range(weights.size) if cand[i] and weights[i] > 0]
    total = float(np.sum(weights[pos])) if pos else 0.0
    keys = [(np.log(rng.random()) / (weights[i] / total), i) for i in pos]
    keys.sort(key=lambda t: (-t[0], t[1]))
    chosen = {i for _, i in keys[:k]}
    if k > len(chosen):
        rest = [i for i in range(weights.size) if cand[i] and i not in chosen]
        chosen |= set(rng.choice(np.array(rest), size=k - len(chosen), replace=False).tolist())
    return chosen


@pytest.mark.parametrize("n, k, zeros", [(50, 7, 0.0), (300, 40, 0.5), (40, 30, 0.6), (1000, 999, 0.1)])
def test_weighted_sample_equals_a_plain_loop_in_memory_and_in_place(n, k, zeros):
    """The one successive-sampling routine: in memory and written over the weights (any chunk size), with
    candidates and exclusions, it draws the edges of a plain loop; a budget above the positive-weight candidates
    is filled among the other candidates."""
    from graphprune.sparsify.sampling import weighted_sample

    rng = np.random.default_rng(n)
    w = rng.random(n) ** 3
    w[rng.random(n) < zeros] = 0.0
    cand, excl = rng.random(n) < 0.9, rng.random(n) < 0.05
    free = cand & ~excl
    k = min(k, int(free.sum()))
    want = _naive_weighted_sample(w, k, np.random.default_rng(7), free)
    got = weighted_sample(w, k, np.random.default_rng(7), cand=cand, exclude=excl)
    assert set(np.flatnonzero(got).tolist()) == want
    for chunk in (16, 1 << 22):
        x = w.copy()
        got = weighted_sample(x, k, np.random.default_rng(7), cand=cand, exclude=excl, overwrite=True, chunk=chunk)
        assert set(np.flatnonzero(got).tolist()) == want
        assert np.isnan(x[~free | (w == 0)]).all()  # the keys were written over the weights


def test_weighted_sample_inclusion_follows_the_weights():
    """One draw of k = 1 picks edge e with probability w_e / sum(w): a chi-square test over 4000 seeds."""
    from graphprune.sparsify.sampling import weighted_sample

    w = np.array([1.0, 2.0, 3.0, 4.0, 0.0])
    counts = np.zeros(5)
    for seed in range(4000):
        counts += weighted_sample(w, 1, np.random.default_rng(seed))
    assert counts[4] == 0
    assert stats.chisquare(counts[:4], 4000 * w[:4] / w.sum()).pvalue > 1e-3


def test_igq_under_the_spectral_width(lenet):
    """With ``width="auto"`` the IGQ budgets are fitted to the kept nodes like ERK's: the total stays the target
    count, and every block keeps an edge (no layer collapse at 100x on LeNet-5)."""
    N = sum(b.num_edges for b in lenet.weight_blocks)
    masks = graphprune.sparsify(lenet, "spectral", density=0.01, allocation="igq", seed=0)
    assert sum(int(m.sum()) for m in masks.values()) == round(0.01 * N)
    assert all(int(m.sum()) > 0 for m in masks.values())
    assert graphprune.report(lenet, masks, spectral=False).summary["layer_collapse"] is False
