import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from conftest import needs_graph_tool
from models import build

import graphprune
from graphprune.convert import from_networkx, from_scipy
from graphprune.errors import ParameterError


@pytest.fixture(scope="module")
def masked():
    model, x = build("small_resnet")
    G = graphprune.from_model(model, x)
    return G.with_masks(graphprune.sparsify(G, "random", sparsity=0.97, seed=0))


def _dense(src, dst, w, n):
    A = np.zeros((n, n))
    np.add.at(A, (src, dst), w)
    return A


def _naive_adjacency(G):
    """Directed N x N adjacency of the kept edges by a Python loop over the kept parameter elements, with the
    layout rules written out by hand (linear (out, in); embedding (in, out); conv (out, in/g, *k);
    conv_transpose (in, out/g, *k)): the reference the converters are checked against, not ``to_scipy()``."""
    A = np.zeros((G.num_nodes, G.num_nodes))
    for b in G.blocks:
        so, do = G.node_offset(b.src), G.node_offset(b.dst)
        if not b.is_weight:
            for s, d in zip(b.src_index, b.dst_index):
                A[so + s, do + d] += 1.0
            continue
        w = b.weight.detach().double()
        for idx in torch.nonzero(G.block_mask(b)).tolist():
            if b.layout == "linear":
                s, d = idx[1], idx[0]
            elif b.layout == "embedding":
                s, d = idx[0], idx[1]
            elif b.layout == "conv":
                s, d = (idx[0] // (w.shape[0] // b.groups)) * w.shape[1] + idx[1], idx[0]
            else:
                s, d = idx[0], (idx[0] // (w.shape[0] // b.groups)) * w.shape[1] + idx[1]
            A[so + s, do + d] += abs(float(w[tuple(idx)]))
    return A


def test_networkx_counts_weights_and_layout(masked):
    H = masked.to_networkx()
    assert isinstance(H, nx.MultiDiGraph)
    assert H.number_of_nodes() == masked.num_nodes
    assert H.number_of_edges() == masked.num_edges  # parallel conv edges kept
    A = nx.to_scipy_sparse_array(H, nodelist=range(masked.num_nodes), weight="weight").toarray()
    assert np.allclose(A, _naive_adjacency(masked))
    assert {d["subset"] for _, d in H.nodes(data=True)} == set(range(len(masked.partitions)))
    pos = nx.multipartite_layout(H)
    assert len(pos) == masked.num_nodes
    # every weight edge points at the parameter element it stands for
    for _, _, d in list(H.edges(data=True))[:200]:
        if d["param"] is not None:
            p = masked.blocks_of(d["param"])[0].weight.reshape(-1)
            assert d["weight"] == pytest.approx(abs(float(p[d["param_index"]])))


def test_networkx_simple_digraph_sums_parallel_edges(masked):
    H = masked.to_networkx(multigraph=False)
    A = _naive_adjacency(masked)
    assert H.number_of_edges() == np.count_nonzero(A)
    np.testing.assert_allclose(nx.to_numpy_array(H, nodelist=range(masked.num_nodes)), A)


def test_pyg_data_and_hetero(masked):
    pytest.importorskip("torch_geometric")
    data = masked.to_pyg()
    assert data.num_nodes == masked.num_nodes and data.edge_index.shape == (2, masked.num_edges)
    ei = data.edge_index.numpy()
    A = _dense(ei[0], ei[1], data.edge_weight.numpy(), masked.num_nodes)
    assert np.allclose(A, _naive_adjacency(masked))
    het = masked.to_pyg(hetero=True)
    assert sum(het[t].num_nodes for t in het.node_types) == masked.num_nodes
    assert sum(het[t].edge_index.shape[1] for t in het.edge_types) == masked.num_edges
    t = ("input", "stem", "stem")
    assert het[t].edge_index.shape[1] == int(masked.block_mask("stem").sum())


@needs_graph_tool
def test_graph_tool_agrees_with_networkx(masked):
    from graph_tool import topology

    g = masked.to_graph_tool()
    H = masked.to_networkx()
    assert g.num_vertices() == H.number_of_nodes() and g.num_edges() == H.number_of_edges()
    # weakly connected components: same partition of nodes
    comp, _ = topology.label_components(g, directed=False)
    labels = np.asarray(comp.a)
    nx_comps = list(nx.weakly_connected_components(H))
    assert len(set(labels.tolist())) == len(nx_comps)
    for c in nx_comps:
        assert len({labels[v] for v in c}) == 1
    # degrees (parallel edges counted) and weights
    assert np.array_equal(g.get_out_degrees(g.get_vertices()), [H.out_degree(v) for v in range(g.num_vertices())])
    assert np.array_equal(g.get_in_degrees(g.get_vertices()), [H.in_degree(v) for v in range(g.num_vertices())])
    e = g.get_edges([g.edge_properties["weight"]])
    A = _dense(e[:, 0].astype(int), e[:, 1].astype(int), e[:, 2], masked.num_nodes)
    assert np.allclose(A, _naive_adjacency(masked))


def test_scipy_and_frames(masked):
    A = masked.to_scipy()
    ref = _naive_adjacency(masked)
    assert sp.issparse(A) and A.shape == (masked.num_nodes,) * 2
    np.testing.assert_allclose(A.toarray(), ref)
    np.testing.assert_allclose(masked.to_scipy(directed=False).toarray(), ref + ref.T)
    df = masked.edges_frame()
    assert len(df) == masked.num_edges
    assert np.allclose(_dense(df.src.to_numpy(), df.dst.to_numpy(), df.weight.to_numpy(), masked.num_nodes), ref)
    kept = df[df.param == "fc.weight"]
    assert len(kept) == int(masked.param_mask("fc.weight").sum())
    nodes = masked.nodes_frame()
    assert len(nodes) == masked.num_nodes
    assert nodes.groupby("partition", sort=False).size().tolist() == [p.size for p in masked.partitions]
    assert (nodes.out_degree.to_numpy() == df.groupby("src").size().reindex(range(masked.num_nodes),
                                                                            fill_value=0).to_numpy()).all()


def test_missing_backend_message(monkeypatch):
    import sys

    from graphprune.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "graph_tool", None)  # makes the import fail like a missing package
    G = graphprune.from_model(torch.nn.Linear(2, 2), torch.randn(1, 2))
    with pytest.raises(MissingDependencyError, match="apt-get install python3-graph-tool"):
        G.to_graph_tool()


# -- back from networkx and scipy -----------------------------------------------------------------------------------
def _same_graph(K, G):
    """K is G rebuilt: the same partitions, blocks (layouts, shapes, rows), masks, and weights on kept edges."""
    assert [(p.name, p.size, p.role, p.kind) for p in K.partitions] == [(p.name, p.size, p.role, p.kind)
                                                                        for p in G.partitions]
    assert [(b.name, b.src, b.dst, b.kind, b.layout, b.groups, b.param_slice, b.edge_kind) for b in K.blocks] == [
        (b.name, b.src, b.dst, b.kind, b.layout, b.groups, b.param_slice, b.edge_kind) for b in G.blocks]
    for k, m in G.masks.items():
        assert torch.equal(K.masks[k], m), k
    for a, b in zip(K.weight_blocks, G.weight_blocks):
        assert a.weight.dtype == b.weight.dtype and a.weight.shape == b.weight.shape
        keep = G.block_mask(b)
        assert torch.equal(a.weight[keep], b.weight.detach()[keep]), a.name
        assert not bool(a.weight[~keep].any())  # masked edges were not in the converted graph: weight 0
    for a, b in zip(K.blocks, G.blocks):
        if not a.is_weight:  # the same identity edges (networkx may list them in another order)
            assert sorted(zip(a.src_index.tolist(), a.dst_index.tolist())) == sorted(
                zip(b.src_index.tolist(), b.dst_index.tolist()))
    np.testing.assert_allclose(_naive_adjacency(K), _naive_adjacency(G))
    K.validate()


@pytest.mark.parametrize("name", ["small_resnet", "attention", "tied", "depthwise", "conv1d"])
def test_networkx_round_trip_gives_the_graph_back(name):
    model, x = build(name)
    G = graphprune.from_model(model, x)
    G = G.with_masks(graphprune.sparsify(G, "random", sparsity=0.7, seed=1))
    H = G.to_networkx()
    K = from_networkx(H)
    _same_graph(K, G)
    # and networkx's own view of the rebuilt graph is the one it was given
    nodes = range(G.num_nodes)
    np.testing.assert_array_equal(nx.to_numpy_array(K.to_networkx(), nodelist=nodes),
                                  nx.to_numpy_array(H, nodelist=nodes))
    assert dict(K.to_networkx().nodes(data=True)) == dict(H.nodes(data=True))


def test_from_networkx_generic_graph_by_hand():
    """A graph networkx built, with nothing of graphprune's: three layers (subset 0, 1, 2), hand-written edges."""
    H = nx.DiGraph()
    H.add_nodes_from(["a", "b"], subset=0)
    H.add_nodes_from(["c", "d", "e"], subset=1)
    H.add_nodes_from(["f"], subset=2)
    H.add_weighted_edges_from([("a", "c", 2.0), ("b", "c", 0.5), ("b", "e", 3.0), ("c", "f", 1.0), ("e", "f", 4.0)])
    H.add_edge("a", "f")  # no weight: 1, and a block that skips a layer
    G = from_networkx(H)
    assert [p.size for p in G.partitions] == [2, 3, 1]
    assert [p.role for p in G.partitions] == ["input", "hidden", "output"]
    assert [b.name for b in G.blocks] == ["0->1", "0->2", "1->2"]
    np.testing.assert_array_equal(G.biadjacency("0->1").toarray(), [[2.0, 0.5], [0.0, 0.0], [0.0, 3.0]])
    np.testing.assert_array_equal(G.biadjacency("0->2").toarray(), [[1.0, 0.0]])
    np.testing.assert_array_equal(G.biadjacency("1->2").toarray(), [[1.0, 0.0, 4.0]])
    assert G.num_edges == H.number_of_edges() == 6
    order = ["a", "b", "c", "d", "e", "f"]
    np.testing.assert_array_equal(G.adjacency(directed=True).toarray(), nx.to_numpy_array(H, nodelist=order))
    np.testing.assert_array_equal(G.degrees("out"), [H.out_degree(v) for v in order])
    assert len(nx.multipartite_layout(G.to_networkx())) == 6


def test_from_networkx_sums_parallel_edges():
    H = nx.MultiDiGraph()
    H.add_nodes_from([0], subset="in")
    H.add_nodes_from([1], subset="out")
    H.add_edge(0, 1, weight=1.5)
    H.add_edge(0, 1, weight=2.0)
    G = from_networkx(H)
    np.testing.assert_array_equal(G.biadjacency(G.blocks[0]).toarray(), [[3.5]])


def test_from_scipy_hand_built():
    A = np.zeros((6, 6))
    A[0, 2], A[1, 3], A[1, 4] = 1.0, 2.0, 0.25  # partition 0 (2 nodes) -> partition 1 (3 nodes)
    A[4, 5] = 5.0  # partition 1 -> partition 2 (1 node)
    G = from_scipy(sp.csr_array(A), [2, 3, 1], names=["x", "h", "y"])
    assert [b.name for b in G.blocks] == ["x->h", "h->y"]
    w = G.block("x->h").weight
    assert w.shape == (3, 2)  # (out, in)
    np.testing.assert_array_equal(w.numpy(), [[1.0, 0.0], [0.0, 2.0], [0.0, 0.25]])
    np.testing.assert_array_equal(G.block_mask("x->h").numpy(), [[True, False], [False, True], [False, True]])
    np.testing.assert_array_equal(G.biadjacency("h->y").toarray(), [[0.0, 0.0, 5.0]])
    np.testing.assert_array_equal(G.adjacency(directed=True).toarray(), A)
    assert G.num_edges == 4


def test_from_scipy_round_trip_of_an_mlp():
    """An MLP has no parallel edges: to_scipy and from_scipy give back the same biadjacencies, checked against
    |w| of the model's own weights (masked entries 0)."""
    model, x = build("mlp")
    G = graphprune.from_model(model, x)
    G = G.with_masks(graphprune.sparsify(G, "random", sparsity=0.5, seed=2))
    K = from_scipy(G.to_scipy(), [p.size for p in G.partitions], names=[p.name for p in G.partitions])
    assert [p.size for p in K.partitions] == [p.size for p in G.partitions]
    layers = [m for m in model if isinstance(m, torch.nn.Linear)]
    for kb, layer, b in zip(K.weight_blocks, layers, G.weight_blocks):
        expect = layer.weight.detach().double().abs() * G.block_mask(b)
        np.testing.assert_array_equal(kb.weight.numpy(), expect.numpy())
        assert torch.equal(K.block_mask(kb), G.block_mask(b) & (layer.weight != 0))
    assert K.num_edges == G.num_edges


@pytest.mark.parametrize("call, match", [
    (lambda: from_scipy(np.ones((3, 3)), [2, 2]), r"square \(4, 4\)"),
    (lambda: from_scipy(np.eye(3, k=1) * -1, [1, 2]), "negative"),
    (lambda: from_scipy(np.eye(4, k=1), [2, 2]), "stays inside partition '0'"),
    (lambda: from_networkx(nx.Graph()), "DiGraph or MultiDiGraph"),
    (lambda: from_networkx(nx.DiGraph([(0, 1)])), "'subset'"),
])
def test_from_errors_name_the_problem(call, match):
    with pytest.raises(ParameterError, match=match):
        call()
