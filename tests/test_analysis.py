import math

import networkx as nx
import numpy as np
import pytest
import torch
from conftest import needs_graph_tool
from models import build
from torch import nn

import graphprune
from graphprune.analysis import (
    algebraic_connectivity,
    articulation_points,
    block_spectrum_metrics,
    bridges,
    components,
    count_paths,
    degree_table,
    effective_mask,
    effective_sparsity,
    layer_collapse,
    node_status,
    reachability,
    removable_edges,
)
from graphprune.errors import ParameterError


def chain(*sizes):
    torch.manual_seed(0)
    layers = [nn.Linear(a, b, bias=False) for a, b in zip(sizes[:-1], sizes[1:])]
    net = nn.Sequential(*layers)
    return net, graphprune.from_model(net, torch.randn(1, sizes[0]))


def test_path_graph_counts():
    # a path 1-1-1-1: one input-output path, SynFlow = product of |w|
    net, G = chain(1, 1, 1, 1)
    w = [abs(float(m.weight.detach())) for m in net]
    assert count_paths(G) == pytest.approx(0.0)
    assert count_paths(G, weighted=True) == pytest.approx(math.log10(np.prod(w)))
    assert len(bridges(G)) == 3 and len(articulation_points(G)) == 2


def test_complete_layers_path_count_and_synflow_by_hand():
    net, G = chain(3, 4, 2)
    assert count_paths(G) == pytest.approx(math.log10(3 * 4 * 2))
    W1, W2 = (m.weight.detach().abs().double() for m in net)
    synflow = float(torch.ones(2, dtype=torch.float64) @ W2 @ W1 @ torch.ones(3, dtype=torch.float64))
    assert count_paths(G, weighted=True) == pytest.approx(math.log10(synflow))


def test_dead_neuron_sink_source_and_effective_mask():
    net, G = chain(3, 4, 2)
    m1 = torch.ones(4, 3, dtype=torch.bool)
    m1[2] = False  # hidden neuron 2 gets no input: a source
    m2 = torch.ones(2, 4, dtype=torch.bool)
    m2[:, 3] = False  # hidden neuron 3 feeds nothing: a sink
    masks = {"0.weight": m1, "1.weight": m2}
    st = node_status(G, masks=masks)
    hidden = G.node_offset("0")
    assert st["source"].nonzero()[0].tolist() == [hidden + 2]
    assert st["sink"].nonzero()[0].tolist() == [hidden + 3]
    eff = effective_mask(G, masks=masks)
    want1 = m1.clone()
    want1[3] = False  # edges into the sink are not on an input-output path
    want2 = m2.clone()
    want2[:, 2] = False  # edges out of the source neither
    assert torch.equal(eff["0.weight"], want1) and torch.equal(eff["1.weight"], want2)
    kept = int(m1.sum() + m2.sum())
    assert effective_sparsity(G, masks=masks) == pytest.approx(1 - (kept - 3 - 2) / 20)
    rem = removable_edges(G, masks=masks)
    assert rem["0:count"] == 3 and rem["1:count"] == 2
    table = degree_table(G, masks=masks)
    row = table.set_index("partition").loc["0"]
    assert (row.sinks, row.sources, row.in_min, row.out_min) == (1, 1, 0, 0)
    assert count_paths(G, masks=masks) == pytest.approx(math.log10(3 * 2 * 2))  # via neurons 0 and 1 only


def test_layer_collapse_named():
    net, G = chain(3, 4, 2)
    masks = {"1.weight": torch.zeros(2, 4, dtype=torch.bool)}
    found = layer_collapse(G, masks=masks)
    assert "input and output are disconnected" in found
    assert any("block '1'" in f for f in found) and any("block '0'" in f for f in found)
    assert count_paths(G, masks=masks) == -math.inf
    assert layer_collapse(G) == []


def test_residual_keeps_flow_through_identity_edges():
    model, x = build("small_resnet")
    G = graphprune.from_model(model, x)
    masks = {"block1.conv2.weight": torch.zeros(8, 8, 3, 3, dtype=torch.bool)}
    # block1's second conv is cut, but the shortcut carries the signal: its first conv is now ineffective
    eff = effective_mask(G, masks=masks)
    assert not eff["block1.conv1.weight"].any()
    assert eff["block2.conv1.weight"].all()
    assert not any("disconnected" in f for f in layer_collapse(G, masks=masks))


def _random_sparse(name="lenet5", sparsity=0.98, seed=0):
    model, x = build(name)
    G = graphprune.from_model(model, x)
    return G.with_masks(graphprune.sparsify(G, "random", sparsity=sparsity, seed=seed))


def _simple_edges(H):
    """Distinct undirected kept node pairs and their multiplicities, from the per-edge arrays (the converters'
    path, independent of the block views the analysers use)."""
    e = H.edge_arrays()
    u, v = np.minimum(e["src"], e["dst"]), np.maximum(e["src"], e["dst"])
    key, mult = np.unique(u * H.num_nodes + v, return_counts=True)
    return key // H.num_nodes, key % H.num_nodes, mult


def _n_components(n, u, v):
    from scipy.sparse import coo_array
    from scipy.sparse.csgraph import connected_components

    return connected_components(coo_array((np.ones(u.size), (u, v)), shape=(n, n)), directed=False)[0]


def test_components_articulation_bridges_against_naive_removal():
    H = _random_sparse()
    n = H.num_nodes
    u, v, mult = _simple_edges(H)
    nxg = nx.Graph()
    nxg.add_nodes_from(range(n))
    nxg.add_edges_from(zip(u.tolist(), v.tolist()))
    lab = components(H)
    assert len(set(lab.tolist())) == nx.number_connected_components(nxg)
    for comp in nx.connected_components(nxg):  # same partition of the nodes, not only the same count
        assert len({int(lab[i]) for i in comp}) == 1
    base = _n_components(n, u, v)
    # deleting the edges of a non-isolated node x leaves x alone (+1 component); x is a cut vertex iff the
    # other nodes fall apart too, i.e. the count grows by more than that one
    want_art = []
    for x in np.unique(np.concatenate([u, v])):
        keep = (u != x) & (v != x)
        if _n_components(n, u[keep], v[keep]) > base + 1:
            want_art.append(int(x))
    assert articulation_points(H).tolist() == want_art
    assert len(want_art) > 0
    # a bridge: a single (not parallel) edge whose deletion adds a component; every bridge, not a sample
    want_br = []
    for i in range(u.size):
        if mult[i] == 1:
            keep = np.ones(u.size, dtype=bool)
            keep[i] = False
            if _n_components(n, u[keep], v[keep]) > base:
                want_br.append((int(u[i]), int(v[i])))
    assert bridges(H) == want_br
    assert len(want_br) > 0


@pytest.mark.parametrize("fn", [node_status, degree_table, removable_edges, reachability, effective_mask,
                                effective_sparsity, layer_collapse, count_paths, components, articulation_points,
                                bridges])
def test_removed_mask_keyword_is_refused(fn):
    """The ``mask=`` alias is gone (0.1 clean-up): only ``masks=`` is accepted."""
    _, G = chain(3, 4, 2)
    with pytest.raises(TypeError, match="mask"):
        fn(G, mask={})


def test_count_paths_with_masks_by_hand():
    net, G = chain(3, 4, 2)
    masks = {"1.weight": torch.tensor([[True, False, True, True], [False, False, True, True]])}
    # 3 inputs reach every hidden node; hidden 0 feeds output 0, hidden 2 and 3 feed both, hidden 1 none
    assert count_paths(G, masks=masks) == pytest.approx(math.log10(3 * 2 + 3 * 2 + 3 * 1))


@needs_graph_tool
def test_graph_tool_backend_agrees():
    H = _random_sparse("small_resnet", 0.97)
    a, b = components(H, backend="networkx"), components(H, backend="graph_tool")
    assert len(set(a.tolist())) == len(set(b.tolist())) == len(set(components(H).tolist()))
    assert np.array_equal(articulation_points(H), articulation_points(H, backend="graph_tool"))
    assert bridges(H) == bridges(H, backend="graph_tool")


def test_bad_backend():
    _, G = chain(2, 2)
    with pytest.raises(ParameterError, match="'backend'"):
        components(G, backend="igraph")


def test_spectral_metrics_on_complete_bipartite():
    d = 5
    met = block_spectrum_metrics(np.ones((d, d)))
    # K_{d,d}: singular values d, 0, ...; non-trivial adjacency eigenvalues are 0 -> Ramanujan gap 2 sqrt(d-1)
    assert met["spectral_gap"] == pytest.approx(d)
    assert met["ramanujan_gap"] == pytest.approx(2 * math.sqrt(d - 1))
    assert met["algebraic_connectivity"] == pytest.approx(d)  # Laplacian spectrum of K_{d,d}: 0, d, 2d
    assert met["reason"] == ""


def test_spectral_metrics_missing_with_reason_not_zero():
    met = block_spectrum_metrics(np.eye(4))  # a perfect matching: average degree 1
    assert math.isnan(met["ramanujan_gap"]) and "average degree" in met["reason"]
    assert algebraic_connectivity(np.eye(4)) == 0.0  # disconnected


def test_algebraic_connectivity_matches_networkx():
    rng = np.random.default_rng(0)
    B = np.abs(rng.standard_normal((6, 9)))
    g = nx.Graph()
    for i, j in zip(*np.nonzero(B)):
        g.add_edge(("o", i), ("i", j), weight=B[i, j])
    assert algebraic_connectivity(B) == pytest.approx(nx.algebraic_connectivity(g, weight="weight", tol=1e-12,
                                                                                method="tracemin_lu"), rel=1e-6)


def test_analysis_imports_flow_one_way():
    """No import circle in analysis/, lazy imports included: rendering reads reports and never imports the report
    module; the metric families and the traversal import neither rendering nor the report."""
    import ast
    from pathlib import Path

    root = Path(graphprune.__file__).parent / "analysis"

    def is_module(dotted):
        path = root / dotted.replace(".", "/")
        return path.with_suffix(".py").exists() or (path / "__init__.py").exists()

    deps = {}
    for path in root.rglob("*.py"):
        rel = path.relative_to(root).with_suffix("")
        pkg = list(rel.parts[:-1])  # the package a relative import starts from
        name = ".".join(pkg if rel.name == "__init__" else rel.parts) or "__init__"
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.ImportFrom) and node.level) or node.level - 1 > len(pkg):
                continue  # absolute imports, and relative ones above analysis/ (graphprune's own modules)
            mod = pkg[: len(pkg) - (node.level - 1)] + (node.module.split(".") if node.module else [])
            targets = [".".join(mod + [a.name]) for a in node.names] + ([".".join(mod)] if node.module else [])
            found |= {t for t in targets if is_module(t)}
        deps[name] = found - {name}
    for low in ("reasons", "glossary", "local", "traversal", "global_", "spectral", "partition_graph"):
        assert not {d for d in deps.get(low, ()) if d.startswith(("render", "report"))}, (low, deps.get(low))
    for name, found in deps.items():
        if name.startswith("render"):
            assert "report" not in found, (name, found)

    def reach(start, seen):
        for d in deps.get(start, ()):
            if d not in seen:
                seen.add(d)
                reach(d, seen)
        return seen

    for name in deps:
        assert name not in reach(name, set()), (name, "is in an import circle")
