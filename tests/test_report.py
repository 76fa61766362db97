import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from models import build

import graphprune
from graphprune.cli import main


@pytest.fixture(scope="module")
def lenet():
    model, x = build("lenet5")
    return graphprune.from_model(model, x)


def _kept_multidigraph(H):
    """networkx MultiDiGraph of the kept edges, one edge per kept weight element (attribute ``w``: ``|w|``) or
    identity edge (``w`` 1), built by a plain loop over every block's edges: the reference the sweeps are checked
    against."""
    import networkx as nx

    g = nx.MultiDiGraph()
    g.add_nodes_from(range(H.num_nodes))
    for blk in H.blocks:
        s, d = blk.edge_index()
        so, do = H.node_offset(blk.src), H.node_offset(blk.dst)
        if blk.is_weight:
            keep = H.block_mask(blk).reshape(-1).tolist()
            w = blk.weight.detach().abs().double().reshape(-1).tolist()
        else:
            keep, w = [True] * s.size, [1.0] * s.size
        for i in range(s.size):
            if keep[i]:
                g.add_edge(int(s[i]) + so, int(d[i]) + do, block=blk.name, index=i, w=w[i])
    return g


def _naive_effective(H, g):
    """Per block, its kept edges on an input-output path (source reachable from an input, destination reaching an
    output), by networkx reachability from a super-source and to a super-sink and a loop over the edges."""
    import networkx as nx

    ins = [v for p in H.partitions if p.role == "input" for v in range(H.node_offset(p.name),
                                                                        H.node_offset(p.name) + p.size)]
    outs = [v for p in H.partitions if p.role == "output" for v in range(H.node_offset(p.name),
                                                                          H.node_offset(p.name) + p.size)]
    h = nx.DiGraph(g)
    h.add_edges_from(("S", v) for v in ins)
    h.add_edges_from((v, "T") for v in outs)
    fwd, bwd = nx.descendants(h, "S"), nx.ancestors(h, "T")
    eff = {b.name: 0 for b in H.weight_blocks}
    for u, v, data in g.edges(data=True):
        if data["block"] in eff and u in fwd and v in bwd:
            eff[data["block"]] += 1
    return eff


def test_report_frame_summary_and_warnings(lenet):
    masks = graphprune.sparsify(lenet, "random", sparsity=0.9, seed=0)
    masks["fc3.weight"][:] = False  # cut the last layer: everything collapses
    rep = graphprune.report(lenet, masks)
    f = rep.frame.set_index("block")
    assert list(f.index) == ["conv1", "conv2", "fc1", "fc2", "fc3"]
    assert f.loc["fc1", "kept"] == int(masks["fc1.weight"].sum()) and f.loc["fc1", "total"] == 48000
    assert (f.effective_kept == 0).all() and all("layer collapsed" in w for w in f.warnings)
    assert "10 dead neurons" in f.loc["fc3", "warnings"]
    s = rep.summary
    assert s["layer_collapse"] and s["effective_density"] == 0.0 and s["log10_paths"] == -math.inf
    assert "input and output are disconnected" in s["warnings"]
    # the findings are structured: codes and the block they name, not sentences to parse
    codes = [(r.code, r.numbers.get("block")) for r in rep.findings]
    assert ("disconnected", None) in codes and [b for c, b in codes if c == "layer_collapsed"] == list(f.index)
    assert rep.block_warnings["fc3"][0] == "layer collapsed" and "10 dead neurons" in rep.block_warnings["fc3"]


def test_report_dense_reference_metrics(lenet):
    rep = graphprune.report(lenet)
    assert np.allclose(rep.frame.kappa, 1.0)  # the dense graph against itself
    assert rep.summary["density"] == 1.0 and rep.summary["components"] == 1
    assert rep.frame.warnings.eq("").all()
    assert list(rep.frame.layer) == ["Conv2d 1→6 5×5", "Conv2d 6→16 5×5", "Linear 400→120", "Linear 120→84",
                                     "Linear 84→10"]


def _tiny():
    """Linear(2, 3) then Linear(3, 2), no bias, weights set by hand."""
    net = torch.nn.Sequential(torch.nn.Linear(2, 3, bias=False), torch.nn.Linear(3, 2, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 2.0], [3.0, -1.0], [0.5, 1.0]]))
        net[1].weight.copy_(torch.tensor([[2.0, 1.0, 1.0], [-1.0, 4.0, 2.0]]))
    return graphprune.from_model(net, torch.randn(1, 2))


def test_report_paths_and_synflow_by_hand():
    G = _tiny()
    s = graphprune.report(G).summary
    # dense: every input-hidden-output choice is a path, 2 * 3 * 2 = 12
    assert s["log10_paths"] == pytest.approx(math.log10(12))
    # SynFlow 1^T |W2| |W1| 1: |W1| 1 = (3, 4, 1.5); column sums of |W2| = (3, 5, 3) -> 9 + 20 + 4.5 = 33.5
    assert s["log10_synflow"] == pytest.approx(math.log10(33.5))
    masks = {"0.weight": torch.tensor([[True, False], [True, True], [False, False]]),
             "1.weight": torch.tensor([[True, False, True], [False, True, True]])}
    rep = graphprune.report(G, masks)
    s = rep.summary
    # hidden 0 has 1 input and 1 output: 1 path; hidden 1 has 2 inputs, 1 output: 2 paths; hidden 2 has no input
    assert s["log10_paths"] == pytest.approx(math.log10(3))
    # |w| products: 1*2 + (3 + 1)*4 = 18
    assert s["log10_synflow"] == pytest.approx(math.log10(18))
    f = rep.frame.set_index("block")
    # the two kept edges out of hidden 2 are on no path: 2 of block 1's 4 are effective, all 3 of block 0's
    assert (f.loc["0", "effective_kept"], f.loc["1", "effective_kept"]) == (3, 2)
    assert s["effective_density"] == pytest.approx(5 / 12)
    assert s["dead_neurons"] == 1 and s["sources"] == 1 and s["isolated"] == 0
    assert f.loc["0", "dead_outputs"] == 1 and f.loc["1", "dead_inputs"] == 0


def test_report_counts_match_independent_implementations(lenet):
    import networkx as nx

    masks = graphprune.sparsify(lenet, "random", sparsity=0.97, seed=1)
    rep = graphprune.report(lenet, masks, spectral=False)
    H = lenet.with_masks(masks)
    g = _kept_multidigraph(H)
    f = rep.frame.set_index("block")
    eff = _naive_effective(H, g)
    assert sum(eff.values()) < sum(f.kept)  # 97% random pruning leaves ineffective edges: the check has teeth
    for name, n in eff.items():
        assert f.loc[name, "effective_kept"] == n
    assert rep.summary["effective_density"] == pytest.approx(sum(eff.values()) / sum(f.total))
    assert rep.summary["components"] == nx.number_weakly_connected_components(g)
    assert rep.summary["isolated"] == sum(1 for v in g if g.degree(v) == 0)
    roles = {v: p.role for p in H.partitions for v in range(H.node_offset(p.name), H.node_offset(p.name) + p.size)}
    sinks = sum(1 for v in g if g.in_degree(v) > 0 and g.out_degree(v) == 0 and roles[v] != "output")
    sources = sum(1 for v in g if g.out_degree(v) > 0 and g.in_degree(v) == 0 and roles[v] != "input")
    assert (rep.summary["sinks"], rep.summary["sources"]) == (sinks, sources)


def test_report_paths_and_components_match_networkx_on_a_small_conv_net():
    """Path counts (parallel kernel-tap edges are distinct paths), SynFlow and components of the report and of the
    global analysers (one traversal) against networkx's enumeration of every input-output edge path."""
    import networkx as nx

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 2, bias=False), torch.nn.ReLU(),
                              torch.nn.Conv2d(3, 2, 2, bias=False))
    G = graphprune.from_model(net, torch.randn(1, 2, 4, 4))
    masks = graphprune.sparsify(G, "random", sparsity=0.6, seed=0)
    H = G.with_masks(masks)
    g = _kept_multidigraph(H)
    ins = range(H.node_offset("input"), H.node_offset("input") + 2)
    outs = [H.node_offset(p.name) + i for p in H.partitions if p.role == "output" for i in range(p.size)]
    paths = [path for s in ins for t in outs for path in nx.all_simple_edge_paths(g, s, t)]
    synflow = sum(math.prod(g.edges[e]["w"] for e in path) for path in paths)
    assert len(paths) > 1
    s = graphprune.report(G, masks, spectral=False).summary
    assert s["log10_paths"] == pytest.approx(math.log10(len(paths)))
    assert s["log10_synflow"] == pytest.approx(math.log10(synflow))
    assert graphprune.analysis.count_paths(H) == pytest.approx(math.log10(len(paths)))
    assert graphprune.analysis.count_paths(H, weighted=True) == pytest.approx(math.log10(synflow))
    comps = list(nx.weakly_connected_components(g))
    lab = graphprune.analysis.components(H)
    assert s["components"] == len(comps) == len(set(lab.tolist()))
    assert all(len({int(lab[v]) for v in c}) == 1 for c in comps)


def test_undefined_values_have_reasons(lenet, tmp_path):
    masks = graphprune.sparsify(lenet, "random", sparsity=0.95, seed=0)
    rep = graphprune.report(lenet, masks)
    f = rep.frame.set_index("block")
    # fc3 keeps 42 of 840 edges: its 84 inputs keep far fewer than 3 edges each on average
    assert math.isnan(f.loc["fc3", "ramanujan_gap"])
    assert f.loc["fc3", "na"]["ramanujan_gap"].startswith("average degree") and "< 3" in f.loc["fc3", "na"][
        "ramanujan_gap"]
    # conv1 has one input channel: the second singular value does not exist
    assert math.isnan(f.loc["conv1", "spectral_gap"]) and f.loc["conv1", "na"]["spectral_gap"] == \
        "one node on a side"
    disconnected = f[np.isinf(f.kappa)]
    assert len(disconnected) >= 1
    import networkx as nx

    H = lenet.with_masks(masks)
    for name, row in disconnected.iterrows():
        # the component counts of the reason, against networkx on the block's kept channel pairs (every node of a
        # dense lenet block has an edge, so the dense block is one component)
        B = H.biadjacency(H.block(name)).toarray()
        g = nx.Graph()
        g.add_nodes_from([("o", i) for i in range(B.shape[0])] + [("i", j) for j in range(B.shape[1])])
        g.add_edges_from((("o", i), ("i", j)) for i, j in zip(*np.nonzero(B)))
        want = f"disconnected: {nx.number_connected_components(g)} components (dense 1)"
        assert row["na"]["kappa"] == want and row["na"]["epsilon"] == "κ = ∞"
    md = rep.to_markdown()
    assert "n/a (average degree" in md and "∞ (disconnected:" in md
    page = rep.to_html(tmp_path / "r.html", figures=False)
    assert 'class="na"' in page and "n/a<span class=\"why\">average degree" in page


def test_report_exports_and_plot(lenet, tmp_path):
    rep = graphprune.report(lenet, graphprune.sparsify(lenet, "spectral", sparsity=0.8, seed=0))
    data = json.loads(rep.to_json(tmp_path / "r.json"))
    assert data["summary"]["density"] == pytest.approx(0.2, abs=1e-3) and len(data["blocks"]) == 5
    md = rep.to_markdown(tmp_path / "r.md")
    assert md.startswith("# Connectivity report") and "| `conv1` Conv2d 1→6 5×5 |" in md
    page = rep.to_html(tmp_path / "r.html")
    assert page.count("data:image/png;base64,") == 3 and "<table class=\"sortable blocks\">" in page
    assert "<svg class=\"network\"" in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert (tmp_path / "r.html").exists()
    fig = rep.plot()
    assert len(fig.axes) == 3
    with pytest.raises(graphprune.errors.ParameterError, match="folder"):
        rep.to_json(tmp_path / "missing" / "r.json")


def test_compare_side_by_side(lenet, tmp_path):
    cands = {m: graphprune.sparsify(lenet, m, sparsity=0.95, seed=0) for m in ("spectral", "random", "magnitude")}
    cmp = graphprune.compare(cands, lenet)
    df = cmp.frame
    assert list(df.index) == ["spectral", "random", "magnitude"]
    assert {"effective_density", "log10_paths", "median_kappa", "collapsed_blocks"} <= set(df.columns)
    assert not hasattr(cmp, "density")  # the DataFrame forwarding is gone: cmp.frame.density
    total = sum(b.num_edges for b in lenet.weight_blocks)
    for name, masks in cands.items():  # each row against a count over its masks and a loop over its edges
        assert df.loc[name, "density"] == pytest.approx(sum(int(m.sum()) for m in masks.values()) / total)
        H = lenet.with_masks(masks)
        eff = _naive_effective(H, _kept_multidigraph(H))
        assert df.loc[name, "effective_density"] == pytest.approx(sum(eff.values()) / total)
        assert df.loc[name, "collapsed_blocks"] == sum(1 for n in eff.values() if n == 0)
    again = graphprune.compare(lenet, cands, spectral=False)  # graph-first order, like report and apply_masks
    assert list(again.frame.index) == list(df.index)
    page = cmp.to_html(tmp_path / "c.html")
    assert page.count("<svg class=\"network\"") == 3 and "sortable compare" in page and "sortable perblock" in page
    md = cmp.to_markdown()
    assert "| spectral |" in md and "## Per-block density" in md
    doc = json.loads(cmp.to_json())
    assert doc["schema"] == "graphprune.comparison" and set(doc["candidates"]) == set(cands)


@pytest.mark.parametrize("call, match", [
    (lambda G: graphprune.report("graph"), "The 'G' parameter of report must be a MultipartiteGraph"),
    (lambda G: graphprune.report(G, [1, 2]), "The 'masks' parameter of report"),
    (lambda G: graphprune.report(G, G), "pass it as the first argument"),
    (lambda G: graphprune.report(G, view="bogus"), "The 'view' parameter of report"),
    (lambda G: graphprune.report(G, spectral="yes"), "The 'spectral' parameter of report"),
    (lambda G: graphprune.report(G, max_cut_edges=-1), "The 'max_cut_edges' parameter of report"),
    (lambda G: graphprune.report(G, reference="dense"), "The 'reference' parameter of report"),
    (lambda G: graphprune.compare([G.masks], G), "The 'candidates' parameter of compare must be a non-empty dict"),
    (lambda G: graphprune.compare({}, G), "Got an empty dict instead"),
    (lambda G: graphprune.compare({"a": G.masks}), "The 'G' parameter of compare is needed"),
    (lambda G: graphprune.compare({"a": G.masks}, "graph"), "The 'G' parameter of compare must be a Multipartite"),
    (lambda G: graphprune.compare({"a": 3}, G), "Candidate 'a' of compare"),
])
def test_report_and_compare_refuse_bad_input(call, match):
    G = _tiny()
    before = {k: v.clone() for k, v in G.masks.items()}
    with pytest.raises(graphprune.errors.ParameterError, match=match):
        call(G)
    assert all(torch.equal(before[k], v) for k, v in G.masks.items())


def test_cli_help_and_errors(capsys):
    for argv in (["prune", "resnet18", "--sparsity", "1.5"], ["prune", "no_such_model_xyz"],
                 ["report", "resnet18", "--masks", "/no/such/file.pt"], ["bogus"],
                 ["export", "tests.models:nothing_here", "--input-shape", "1,4"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("graphprune") and "Traceback" not in err
    proc = subprocess.run([sys.executable, "-m", "graphprune.cli", "prune", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "--sparsifier" in proc.stdout


def test_cli_prune_and_report(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "factory_mod.py").write_text(
        "import torch\n"
        "def make():\n"
        "    torch.manual_seed(0)\n"
        "    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))\n")
    masks = tmp_path / "m.pt"
    rc = main(["prune", "factory_mod:make", "--input-shape", "1,6", "--sparsity", "0.5", "--out", str(masks),
               "--report", str(tmp_path / "r.json"), "--quiet", "--save-model", str(tmp_path / "w.pt")])
    assert rc == 0
    loaded = graphprune.load_masks(masks)
    assert int(loaded["0.weight"].sum()) == 24
    state = torch.load(tmp_path / "w.pt", weights_only=True)
    assert torch.equal(state["0.weight"] != 0, loaded["0.weight"])
    assert main(["report", "factory_mod:make", "--input-shape", "1,6", "--masks", str(masks), "--weights",
                 str(tmp_path / "w.pt"), "--out", str(tmp_path / "r.md")]) == 0
    assert "density 0.5000" in capsys.readouterr().out


def test_cli_experiment(tmp_path, capsys):
    out = tmp_path / "res"
    argv = ["experiment", "--dataset", "synthetic", "--methods", "random,spectral", "--compressions", "10",
            "--seeds", "0", "--epochs", "1", "--out", str(out), "--no-spectral", "--quiet"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "| spectral |" in text and (out / "study_mlp_synthetic.csv").exists()
    assert main(argv[:4] + ["nonsense"] + argv[5:]) == 2
    assert "unknown method" in capsys.readouterr().err
    assert main(argv + ["--compare", "random,spectral"]) == 0  # resumes (no new run) and prints the pairs
    text = capsys.readouterr().out
    assert "| compression | seeds | random | spectral |" in text and "(one seed)" in text and "(0 new runs)" in text
    assert main(argv + ["--compare", "random"]) == 2
    assert "--compare takes two methods" in capsys.readouterr().err


def test_report_counts_cut_vertices_and_bridges():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(1, 1, bias=False), torch.nn.Linear(1, 1, bias=False))
    G = graphprune.from_model(net, torch.randn(1, 1))
    s = graphprune.report(G).summary
    assert (s["articulation_points"], s["bridges"]) == (1, 2)  # a path of three nodes, by hand
    assert (s["components"], s["log10_paths"]) == (1, 0.0)  # one path
    big = graphprune.report(G, max_cut_edges=1).summary
    assert big["bridges"] is None


def test_collapse_of_a_row_slice_is_its_own_rows_against_networkx():
    """A packed in_proj's k rows can die while its q rows live: the report names the k block collapsed. The
    reference: networkx effective edges per block, a block collapsed when no block on the same rows of the same
    parameter keeps one (tied uses share; row slices do not)."""
    model, x = build("transformer")
    G = graphprune.from_model(model, x)
    sliced_seen = False
    for seed in range(4):
        masks = graphprune.sparsify(G, "random", sparsity=0.97, seed=seed)
        H = G.with_masks(masks)
        eff = _naive_effective(H, _kept_multidigraph(H))
        rows = {}
        for b in H.weight_blocks:
            rows.setdefault((b.param, b.param_slice), []).append(b.name)
        want = {n for names in rows.values() if sum(eff[n] for n in names) == 0 for n in names}
        got = {f.split("'")[1] for f in graphprune.report(G, masks, spectral=False).summary["warnings"]
               if f.startswith("layer collapsed: block")}
        assert got == want, seed
        for n in want:
            siblings = [o.name for o in H.blocks_of(H.block(n).param) if o.name != n]
            sliced_seen |= H.block(n).param_slice is not None and any(eff[m] for m in siblings)
    assert sliced_seen  # a slice collapsed while a sibling slice lived: the case the test is about
