import networkx as nx
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from models import build
from scipy.sparse.csgraph import connected_components

import graphprune
from graphprune.errors import ParameterError
from graphprune.resistance import (
    bipartite_resistance,
    choose_method,
    degree_resistance,
    laplacian_from_biadjacency,
    laplacian_resistance,
)


def pinv_reference(B):
    """R of every edge of the bipartite graph of B from numpy.linalg.pinv of the full Laplacian."""
    B = np.asarray(B, dtype=np.float64)
    m, n = B.shape
    Lp = np.linalg.pinv(laplacian_from_biadjacency(B))
    R = np.full(B.shape, np.nan)
    for i, j in zip(*np.nonzero(B)):
        R[i, j] = Lp[i, i] + Lp[m + j, m + j] - 2 * Lp[i, m + j]
    return R


def halfnormal(shape, seed, zero_frac=0.0):
    rng = np.random.default_rng(seed)
    B = np.abs(rng.standard_normal(shape))
    B[rng.random(shape) < zero_frac] = 0
    return B


@pytest.mark.parametrize("shape", [(6, 6), (9, 4), (3, 11), (1, 5), (40, 25)])
@pytest.mark.parametrize("backend", ["scipy", "torch"])
def test_exact_matches_pinv(shape, backend):
    B = halfnormal(shape, seed=sum(shape))
    R = bipartite_resistance(torch.from_numpy(B), backend=backend).numpy()
    np.testing.assert_allclose(R, pinv_reference(B), rtol=1e-10)


@pytest.mark.parametrize("backend", ["scipy", "torch"])
def test_disconnected_dead_neurons_and_isolated_nodes(backend):
    B = np.zeros((7, 6))
    B[:3, :2] = halfnormal((3, 2), 1)  # component 1
    B[3:5, 2:5] = halfnormal((2, 3), 2)  # component 2
    B[5, 5] = 2.0  # a single edge: R = 1/w
    # row 6 is a dead neuron (isolated), nothing else touches it
    R = bipartite_resistance(torch.from_numpy(B), backend=backend).numpy()
    ref = pinv_reference(B)
    np.testing.assert_allclose(R, ref, rtol=1e-10)
    assert R[5, 5] == pytest.approx(0.5)
    assert np.isnan(R[6]).all() and np.isnan(R[0, 3])  # no edge, no resistance


@pytest.mark.parametrize("backend", ["scipy", "torch"])
def test_star_components_many_at_once(backend):
    """A block with hundreds of components, most of them stars (a depthwise convolution has one single-edge
    component per channel; a star has one row or one column): every value against numpy.linalg.pinv of the whole
    Laplacian, and a star's edges are bridges, R = 1/w by hand."""
    rng = np.random.default_rng(3)
    B = np.zeros((420, 400))
    r = c = 0
    stars = []
    for i in range(150):
        kind = i % 5
        h, w = {0: (1, 1), 1: (1, 4), 2: (3, 1), 3: (3, 2), 4: (1, 1)}[kind]  # kind 3 is not a star
        B[r : r + h, c : c + w] = rng.uniform(0.1, 2.0, (h, w))
        if kind != 3:
            stars.append((slice(r, r + h), slice(c, c + w)))
        r, c = r + h + (i % 7 == 0), c + w  # some dead rows in between
    R = bipartite_resistance(torch.from_numpy(B), backend=backend).numpy()
    np.testing.assert_allclose(R, pinv_reference(B), rtol=1e-9)
    for rs, cs in stars:
        np.testing.assert_allclose(R[rs, cs], 1.0 / B[rs, cs], rtol=1e-15)
    assert np.isnan(R[B == 0]).all()


def test_depthwise_conv_resistance_is_one_over_the_channel_weight():
    """Channel view of a depthwise convolution: output channel c meets input channel c only, through its 9 taps
    (parallel edges), so every tap's resistance is 1 / sum_taps |w| (a single edge of that conductance)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 24, 1), torch.nn.ReLU(), torch.nn.Conv2d(24, 24, 3, groups=24),
                              torch.nn.ReLU(), torch.nn.Conv2d(24, 5, 1))
    G = graphprune.from_model(net, torch.randn(1, 3, 8, 8))
    b = next(b for b in G.weight_blocks if b.param == "2.weight")
    R = graphprune.effective_resistance(G, b).numpy()
    w = net[2].weight.detach().double().abs().numpy()  # (24, 1, 3, 3)
    expect = np.broadcast_to(1.0 / w.sum(axis=(1, 2, 3), keepdims=True), w.shape)
    np.testing.assert_allclose(R, expect, rtol=1e-14)


def test_float32_and_networkx():
    B = halfnormal((8, 5), 3, zero_frac=0.3)
    ref = pinv_reference(B)
    R32 = bipartite_resistance(B, dtype=torch.float32)
    assert R32.dtype == torch.float32
    np.testing.assert_allclose(R32.double().numpy(), ref, rtol=2e-4)
    H = nx.Graph()
    m = B.shape[0]
    for i, j in zip(*np.nonzero(B)):
        H.add_edge(("u", i), ("v", j), weight=B[i, j])
    R = bipartite_resistance(B).numpy()
    for comp in nx.connected_components(H):
        sub = H.subgraph(comp)
        for (a, b) in list(sub.edges())[:10]:
            i, j = (a[1], b[1]) if a[0] == "u" else (b[1], a[1])
            want = nx.resistance_distance(sub, a, b, weight="weight", invert_weight=False)
            assert R[i, j] == pytest.approx(want, rel=1e-9)
    assert m == 8


def test_degree_approximation_on_complete_bipartite():
    m, n = 5, 3
    exact = bipartite_resistance(torch.ones(m, n)).numpy()
    approx = degree_resistance(torch.ones(m, n)).numpy()
    # hand derivation: K_{m,n} has R = (m + n - 1) / (m n) on every edge; the degree formula gives (m + n) / (m n)
    np.testing.assert_allclose(exact, (m + n - 1) / (m * n))
    np.testing.assert_allclose(approx, (m + n) / (m * n))


@given(arrays(np.float64, st.tuples(st.integers(1, 7), st.integers(1, 7)),
              elements=st.one_of(st.just(0.0), st.floats(0.05, 10.0))))
def test_foster_theorem(B):
    """sum_e w_e R_e = N - (number of components), isolated nodes counting as components."""
    R = bipartite_resistance(B).numpy()
    m, n = B.shape
    A = np.zeros((m + n, m + n))
    A[:m, m:] = B
    c, _ = connected_components(A, directed=False)
    total = np.nansum(B * R)
    assert total == pytest.approx(m + n - c, abs=1e-8)


def test_conv_multigraph_parallel_edges_share_pair_resistance():
    model, x = build("lenet5")
    G = graphprune.from_model(model, x)
    G = G.with_masks(graphprune.sparsify(G, "random", sparsity=0.8, seed=0))
    b = G.block("conv2")
    R = graphprune.effective_resistance(G, "conv2")
    assert R.shape == b.weight.shape
    Bsum = G.biadjacency(b).toarray()  # parallel edges summed into one conductance per channel pair
    ref = pinv_reference(Bsum)
    s, d = b.edge_index()
    kept = G.block_mask(b).reshape(-1).numpy()
    got = R.reshape(-1).numpy()
    np.testing.assert_allclose(got[kept], ref[d[kept], s[kept]], rtol=1e-9)
    assert np.isnan(got[~kept]).all()
    # rolled view: no parallel edges, a different graph
    Rr = graphprune.effective_resistance(G, "conv2", view="rolled").reshape(-1).numpy()
    Br = G.biadjacency(b, view="rolled").toarray()
    sr, dr = b.edge_index("rolled")
    np.testing.assert_allclose(Rr[kept], pinv_reference(Br)[dr[kept], sr[kept]], rtol=1e-9)


def test_whole_graph_exact_and_jl_against_pinv():
    model, x = build("small_resnet")
    G = graphprune.from_model(model, x)
    G = G.with_masks(graphprune.sparsify(G, "random", sparsity=0.5, seed=0))
    Lp = np.linalg.pinv(G.laplacian().toarray())
    R, how = graphprune.effective_resistance(G, method="auto", return_method=True)
    assert how == "exact"
    Rjl = graphprune.effective_resistance(G, method="jl", jl_dim=1500, seed=1)
    errs = []
    for b in G.blocks:
        s, d = b.edge_index()
        u, v = s + G.node_offset(b.src), d + G.node_offset(b.dst)
        ref = Lp[u, u] + Lp[v, v] - 2 * Lp[u, v]
        got = R[b.name].reshape(-1).numpy()
        keep = ~np.isnan(got)
        np.testing.assert_allclose(got[keep], ref[keep], rtol=1e-7)
        errs.append(np.abs(Rjl[b.name].reshape(-1).numpy()[keep] - ref[keep]) / ref[keep])
    errs = np.concatenate(errs)
    assert np.median(errs) < 0.05 and errs.max() < 0.35  # JL: eps ~ sqrt(24 log N / k)


def test_laplacian_resistance_across_components_is_inf():
    B = np.zeros((2, 2))
    B[0, 0] = B[1, 1] = 1.0
    L = laplacian_from_biadjacency(B)
    R = laplacian_resistance(L, (np.array([0, 0]), np.array([2, 3])))
    assert R[0] == pytest.approx(1.0) and np.isinf(R[1])


def test_choose_method_memory_rule_by_hand():
    """The rule written out: a block is exact while 4 m n itemsize bytes fit the budget; a whole graph while
    2 N^2 float64 fit and N <= 12000. The boundaries are computed here, not read from the code."""
    mib = 2**20
    assert choose_method(1024, 1024, budget=32 * mib)[0] == "exact"  # 4 * 1024 * 1024 * 8 = 32 MiB exactly
    assert choose_method(1024, 1024, budget=32 * mib - 1)[0] == "degree"
    assert choose_method(1024, 1024, itemsize=4, budget=16 * mib)[0] == "exact"  # float32 halves it
    assert choose_method(1024, 1025, itemsize=4, budget=16 * mib)[0] == "degree"
    big = 2**60  # the time rule out of the way (tested below)
    assert choose_method(4096, 11008, flop_budget=big)[0] == "exact"  # 1.34 GiB within the 4 GiB default
    assert choose_method(16384, 16385, flop_budget=big)[0] == "degree"  # 4 * 16384 * 16385 * 8 > 8 GiB
    assert choose_method(12000)[0] == "exact" and choose_method(12001)[0] == "jl"  # the size cap
    assert choose_method(1000, budget=2 * 1000 * 1000 * 8 - 1)[0] == "jl"  # the memory cap


def test_choose_method_time_rule_by_hand():
    """A block is exact while 3 M N^2 + 2 N^3 / 3 flops (N the smaller side; the engine's count in
    bipartite_resistance's Notes) stay within 2^34 = 17,179,869,184; the products are worked out here."""
    from graphprune.resistance import exact_block_flops

    assert exact_block_flops(3, 2) == 3 * 3 * 4 + 16 // 3 == 41
    assert exact_block_flops(2, 3) == 41  # either orientation
    # 1024 x 4096: 3 * 4096 * 1024^2 = 12,884,901,888 plus 2 * 1024^3 / 3 = 715,827,882 -> 13,600,729,770: exact
    assert exact_block_flops(1024, 4096) == 13_600_729_770
    assert choose_method(1024, 4096)[0] == "exact" and choose_method(4096, 1024)[0] == "exact"
    # 2048 x 2048: 3 * 2048^3 = 25,769,803,776 plus 5,726,623,061 -> over the budget: the degree approximation
    assert choose_method(2048, 2048)[0] == "degree"
    # the square boundary: (11/3) n^3 <= 2^34 holds for n = 1673 (17,169,563,462) and not for n = 1674 (17,200,370,088)
    assert 3 * 1673**3 + 2 * 1673**3 // 3 <= 2**34 < 3 * 1674**3 + 2 * 1674**3 // 3
    assert choose_method(1673, 1673)[0] == "exact" and choose_method(1674, 1674)[0] == "degree"
    # Llama-2-7B shapes all go to the degree approximation; an explicit flop budget moves the boundary
    assert {choose_method(m, n)[0] for m, n in ((4096, 4096), (11008, 4096), (32000, 4096))} == {"degree"}
    assert choose_method(2048, 2048, flop_budget=31_496_426_837)[0] == "exact"
    assert choose_method(2048, 2048, flop_budget=31_496_426_836)[0] == "degree"
    why = choose_method(4096, 4096)[1]
    assert "GFLOP" in why and "resistance='exact'" in why


def test_auto_says_what_it_picked_and_falls_back_when_memory_is_short(monkeypatch, caplog):
    """K_{3,3}: exact gives (m + n - 1) / (m n) = 5/9 on every edge, the degree approximation (m + n) / (m n) = 6/9
    (hand derivation); "auto" is exact with memory to spare and the degree approximation when the exact working set
    (3 m n + 2 n^2 numbers = 45 * 8 bytes) does not fit in the memory available now."""
    import graphprune.resistance as res

    with caplog.at_level("INFO", logger="graphprune"):
        R, how = graphprune.effective_resistance(torch.ones(3, 3), return_method=True)
    assert how == "exact" and "effective_resistance: exact" in caplog.text
    np.testing.assert_allclose(R.numpy(), np.full((3, 3), 5 / 9), rtol=1e-14)
    caplog.clear()
    monkeypatch.setattr(res, "available_memory", lambda device=None: 45 * 8 - 1)
    with caplog.at_level("INFO", logger="graphprune"):
        R, how = graphprune.effective_resistance(torch.ones(3, 3), return_method=True)
    assert how == "degree" and "effective_resistance: degree" in caplog.text and "available" in caplog.text
    np.testing.assert_allclose(R.numpy(), np.full((3, 3), 6 / 9), rtol=1e-14)
    monkeypatch.setattr(res, "available_memory", lambda device=None: 45 * 8)  # fits exactly: exact again
    assert graphprune.effective_resistance(torch.ones(3, 3), return_method=True)[1] == "exact"


@pytest.mark.parametrize("B, match", [
    (-torch.ones(2, 2), "negative"),
    (torch.tensor([[1.0, float("nan")]]), "NaN"),
    (torch.ones(0, 3), "empty"),
    (torch.ones(3), "2-D"),
])
def test_bad_input(B, match):
    with pytest.raises(ParameterError, match=match):
        bipartite_resistance(B)


def test_bad_method():
    with pytest.raises(ParameterError, match="'method'"):
        graphprune.effective_resistance(torch.ones(2, 2), method="pinv")


@pytest.mark.parametrize("solver", ["lu", "cg"])
def test_jl_solvers_agree_with_exact(solver):
    B = halfnormal((30, 20), 7, zero_frac=0.5)
    L = laplacian_from_biadjacency(B)
    u, v = np.nonzero(B)
    exact = laplacian_resistance(L, (u, v + 30))
    approx = laplacian_resistance(L, (u, v + 30), method="jl", jl_dim=3000, seed=0, solver=solver)
    rel = np.abs(approx - exact) / exact
    assert np.median(rel) < 0.05 and rel.max() < 0.3
    np.testing.assert_allclose(exact, pinv_reference(B)[u, v], rtol=1e-8)


def test_laplacian_resistance_bad_options():
    L = laplacian_from_biadjacency(np.ones((2, 2)))
    with pytest.raises(ParameterError, match="'solver'"):
        laplacian_resistance(L, (np.array([0]), np.array([2])), method="jl", solver="amg")
    with pytest.raises(ParameterError, match="'method'"):
        laplacian_resistance(L, (np.array([0]), np.array([2])), method="pinv")


def test_degree_resistance_in_place_is_the_same_numbers_in_the_same_storage():
    """1/d_i + 1/d_j by a loop over the edges (weighted degrees), NaN off them; overwrite=True writes exactly those
    numbers into the given buffer."""
    from graphprune.resistance import degree_resistance

    g = torch.Generator().manual_seed(0)
    B = torch.rand(7, 5, generator=g, dtype=torch.float64)
    B[B < 0.3] = 0.0
    want = np.full((7, 5), np.nan)
    Bn = B.numpy()
    for i in range(7):
        for j in range(5):
            if Bn[i, j] != 0:
                want[i, j] = 1.0 / Bn[i].sum() + 1.0 / Bn[:, j].sum()
    plain = degree_resistance(B)
    np.testing.assert_allclose(plain.numpy(), want, rtol=1e-15)
    buf = B.clone()
    ptr = buf.data_ptr()
    R = degree_resistance(buf, overwrite=True)
    assert R.data_ptr() == ptr  # no second m x n array
    assert torch.equal(R.isnan(), plain.isnan()) and torch.equal(R.nan_to_num(), plain.nan_to_num())  # bitwise
    assert torch.equal(B.isnan(), torch.zeros_like(B, dtype=torch.bool))  # without overwrite B is untouched


def test_the_time_rule_reaches_prune_and_is_logged(monkeypatch, caplog):
    """With the flop budget at 0 every block is past it: prune(..., "spectral") then gives resistance="degree"'s
    masks (in place, and as masks), and its INFO line counts the blocks per engine."""
    from torch import nn

    import graphprune.resistance as res

    def build():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 6))

    x = torch.randn(2, 12)
    exact = graphprune.prune(build(), x, "spectral", sparsity=0.8, seed=0, permanent=True, progress=False)
    degree = graphprune.prune(build(), x, "spectral", sparsity=0.8, seed=0, permanent=True, progress=False,
                              resistance="degree")
    assert any(not torch.equal(exact[k], degree[k]) for k in exact)  # the engines differ on these blocks
    monkeypatch.setattr(res, "EXACT_FLOP_BUDGET", 0)
    with caplog.at_level("INFO", logger="graphprune"):
        auto = graphprune.prune(build(), x, "spectral", sparsity=0.8, seed=0, permanent=True, progress=False)
    assert all(torch.equal(auto[k], degree[k]) for k in degree)
    assert "resistances by engine (blocks): degree 2" in caplog.text
