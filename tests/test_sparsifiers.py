import os
import sys
import textwrap

import networkx as nx
import numpy as np
import pytest
import torch
from models import build
from scipy import stats
from test_resistance import pinv_reference

import graphprune
from graphprune.analysis import layer_collapse
from graphprune.errors import ParameterError
from graphprune.sparsify import check_sparsifier, get_sparsifier, registry
from graphprune.sparsify.spectral import SpectralSparsifier

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")


@pytest.mark.parametrize("name, options", [
    ("random", {}), ("magnitude", {}), ("degree", {}), ("degree", {"view": "channel"}),
    ("spectral", {}), ("spectral", {"width": "all"}), ("spectral", {"width": "all", "view": "rolled"}),
    ("spectral", {"width": "all", "scope": "graph"}),
    ("spectral", {"width": "all", "sampling": "with_replacement", "reweight": True}),
    ("spectral", {"width": "all", "guard": True}), ("spectral", {"iterations": 3}),
])
def test_shipped_sparsifiers_conform(name, options):
    check_sparsifier(get_sparsifier(name), options=options)


def _tiny():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3, bias=False))
    return graphprune.from_model(net, torch.randn(1, 4)), net


@pytest.mark.parametrize("sampling", ["without_replacement", "with_replacement"])
def test_spectral_sampling_distribution_chi_square(sampling):
    """With k = 1, the kept edge is drawn with probability w_e R_e / sum(w R), R from numpy pinv."""
    G, net = _tiny()
    W = net[0].weight.detach().abs().double().numpy()  # (3, 4): rows = outputs
    p = (W * pinv_reference(W)).reshape(-1)
    p /= p.sum()
    assert p.sum() == pytest.approx(1.0)
    runs = 3000
    counts = np.zeros(12)
    for seed in range(runs):
        m = SpectralSparsifier(density=1 / 12, seed=seed, sampling=sampling, width="all").sparsify(G)["0.weight"]
        counts += m.reshape(-1).numpy()
    assert counts.sum() == runs
    _, pval = stats.chisquare(counts, runs * p)
    assert pval > 1e-3
    # and clearly not uniform
    _, p_uniform = stats.chisquare(counts, np.full(12, runs / 12))
    assert p_uniform < 1e-6


def test_reweighting_is_unbiased():
    """E[sum of reweighted kept weights] = sum of weights (Spielman-Srivastava estimator), per edge on average."""
    G, net = _tiny()
    W = net[0].weight.detach().abs().double()
    total = torch.zeros_like(W)
    runs = 2000
    for seed in range(runs):
        sp = SpectralSparsifier(density=0.5, seed=seed, sampling="with_replacement", reweight=True,
                                width="all")
        m = sp.sparsify(G)["0.weight"]
        total += W * sp.scales_["0.weight"] * m
    np.testing.assert_allclose((total / runs).numpy(), W.numpy(), rtol=0.12)


def test_reweight_scales_reach_the_model():
    G, net = _tiny()
    sp = SpectralSparsifier(density=0.5, seed=0, reweight=True, width="all")
    masks = sp.sparsify(G)
    w0 = net[0].weight.detach().clone()
    graphprune.apply_masks(net, G, masks, scales=sp.scales_)
    m = masks["0.weight"]
    torch.testing.assert_close(net[0].weight[m], (w0 * sp.scales_["0.weight"].float())[m])


def test_spectral_beats_random_on_spectral_similarity():
    """The paper's per-layer sampling (width='all', every node kept) preserves block Laplacians better than random."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(48, 48), torch.nn.ReLU(), torch.nn.Linear(48, 48))
    G = graphprune.from_model(net, torch.randn(1, 48))
    kap = {}
    for method in ("spectral", "random"):
        vals = []
        for seed in range(3):
            opts = {"width": "all"} if method == "spectral" else {}
            df = graphprune.spectral_similarity(G, graphprune.sparsify(G, method, density=0.15, seed=seed, **opts))
            vals.append(df.kappa.median())
        kap[method] = np.median(vals)
    assert kap["spectral"] < kap["random"]


def test_guard_keeps_every_node_connected():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(30, 20))
    with torch.no_grad():
        net[0].weight[:, :5] *= 1e-4  # five inputs almost never sampled
    G = graphprune.from_model(net, torch.randn(1, 30))
    k = 50  # budget >= nodes: every node can keep an edge
    plain = SpectralSparsifier(density=k / 600, seed=0, width="all").sparsify(G)["0.weight"]
    guarded = SpectralSparsifier(density=k / 600, seed=0, width="all", guard=True).sparsify(G)["0.weight"]
    assert int(guarded.sum()) == k
    assert (guarded.sum(0) > 0).all() and (guarded.sum(1) > 0).all()
    assert (plain.sum(0) == 0).any()  # without the guard some inputs are cut off


def test_degree_sparsifier_is_biregular_when_budget_divides():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(12, 8))
    G = graphprune.from_model(net, torch.randn(1, 12))
    m = graphprune.sparsify(G, "degree", density=0.5, seed=0)["0.weight"]
    assert m.sum(1).tolist() == [6] * 8 and m.sum(0).tolist() == [4] * 12
    m2 = graphprune.sparsify(G, "degree", density=0.3, seed=0)["0.weight"]  # 29 edges: off by at most one
    assert set(m2.sum(1).tolist()) <= {3, 4} and set(m2.sum(0).tolist()) <= {2, 3}
    conv = torch.nn.Conv2d(4, 6, 3)
    H = graphprune.from_model(conv, torch.randn(1, 4, 5, 5))
    mc = graphprune.sparsify(H, "degree", density=0.5, seed=1)["weight"].reshape(6, -1)
    assert mc.sum(1).tolist() == [18] * 6 and set(mc.sum(0).tolist()) == {3}


def test_degree_sparsifier_on_masked_block_keeps_shares():
    G, _ = _tiny()
    m0 = torch.tensor([[True, True, True, True], [True, True, False, False], [True, True, True, True]])
    H = G.with_masks({"0.weight": m0})
    m = graphprune.sparsify(H, "degree", sparsity=0.5, seed=0)["0.weight"]
    assert int(m.sum()) == 6 and not bool((m & ~m0).any())
    # quotas proportional to available degree (4, 2, 4) -> (2.4, 1.2, 2.4): largest remainders give 2 or 3, 1
    rows = m.sum(1).tolist()
    assert rows[1] == 1 and sorted([rows[0], rows[2]]) == [2, 3]


def test_spectral_bad_input():
    G, net = _tiny()
    with pytest.raises(ParameterError, match="'view' parameter of SpectralSparsifier"):
        graphprune.sparsify(G, "spectral", sparsity=0.5, view="unrolled")
    with pytest.raises(ParameterError, match="'resistance' parameter of SpectralSparsifier can be 'jl' only with "
                                             "scope='graph'"):
        graphprune.sparsify(G, "spectral", sparsity=0.5, resistance="jl")
    with torch.no_grad():
        net[0].weight.zero_()
    # an all-zero block is no bad input since issue 22: it is pruned by the documented rule, with a warning
    # (tests/test_zero_blocks.py)
    with pytest.warns(RuntimeWarning, match=r"Block '0' \(0\.weight\) has no non-zero available weight"):
        m = graphprune.sparsify(G, "spectral", sparsity=0.5)["0.weight"]
    assert int(m.sum()) == 6 and not G.is_masked


def test_spectral_on_models_keeps_layers_connected():
    for name in ("small_resnet", "transformer", "conv1d"):
        model, x = build(name)
        G = graphprune.from_model(model, x)
        masks = graphprune.sparsify(G, "spectral", sparsity=0.95, seed=0)
        H = G.with_masks(masks)
        assert H.density() == pytest.approx(0.05, abs=0.002)
        # every weight block keeps an edge on an input-output path: reachability by networkx on the per-edge
        # arrays (the converters' path), not by the analysers under test
        e = H.edge_arrays()
        g = nx.DiGraph()
        g.add_nodes_from(range(H.num_nodes))
        g.add_edges_from(zip(e["src"].tolist(), e["dst"].tolist()))
        roles = [(p.role, H.node_offset(p.name), p.size) for p in H.partitions]
        g.add_edges_from(("in", a + i) for r, a, n in roles if r == "input" for i in range(n))
        g.add_edges_from((a + i, "out") for r, a, n in roles if r == "output" for i in range(n))
        fwd, bwd = nx.descendants(g, "in"), nx.ancestors(g, "out")
        for bi, b in enumerate(H.blocks):
            if not b.is_weight:
                continue
            sel = e["block"] == bi
            assert any(s in fwd and d in bwd for s, d in zip(e["src"][sel].tolist(), e["dst"][sel].tolist())), \
                (name, b.name)
        assert layer_collapse(H) == []


def test_entry_point_plugin_loopback(tmp_path, monkeypatch):
    dist = tmp_path / "graphprune_loopback-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: graphprune-loopback\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(textwrap.dedent("""
        [graphprune.sparsifiers]
        neuron-magnitude = plugin_sparsifier:NeuronBalancedMagnitude
        broken = no_such_module_xyz:Thing
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(EXAMPLES)
    monkeypatch.setattr(registry, "_loaded", False)
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    with pytest.warns(RuntimeWarning, match="Skipping graphprune sparsifier plug-in 'broken'"):
        names = graphprune.available_sparsifiers()
    assert "neuron-magnitude" in names and "broken" not in names and "spectral" in names
    cls = graphprune.get_sparsifier("neuron-magnitude")
    check_sparsifier(cls)
    model, x = build("mlp")
    G = graphprune.from_model(model, x)
    m = graphprune.sparsify(G, "neuron-magnitude", sparsity=0.75, seed=0)["0.weight"]
    assert m.sum(1).tolist() == [5] * 16  # 80 kept edges spread evenly over 16 neurons
    sys.modules.pop("plugin_sparsifier", None)
