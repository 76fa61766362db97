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


def test_report_dense_reference_metrics(lenet):
    rep = graphprune.report(lenet)
    assert np.allclose(rep.frame.kappa, 1.0)  # the dense graph against itself
    assert rep.summary["density"] == 1.0 and rep.summary["components"] == 1
    assert rep.summary["log10_paths"] == pytest.approx(graphprune.analysis.count_paths(lenet))
    assert rep.frame.warnings.eq("").all()


def test_report_exports_and_plot(lenet, tmp_path):
    rep = graphprune.report(lenet, graphprune.sparsify(lenet, "spectral", sparsity=0.8, seed=0))
    data = json.loads(rep.to_json(tmp_path / "r.json"))
    assert data["summary"]["density"] == pytest.approx(0.2, abs=1e-3) and len(data["blocks"]) == 5
    md = rep.to_markdown(tmp_path / "r.md")
    assert md.startswith("# Connectivity report") and "| conv1 |" in md
    page = rep.to_html(tmp_path / "r.html")
    assert "data:image/png;base64," in page and "<table>" in page and (tmp_path / "r.html").exists()
    fig = rep.plot()
    assert len(fig.axes) == 3


def test_compare_side_by_side(lenet):
    cands = {m: graphprune.sparsify(lenet, m, sparsity=0.95, seed=0) for m in ("spectral", "random", "magnitude")}
    df = graphprune.compare(cands, lenet)
    assert list(df.index) == ["spectral", "random", "magnitude"]
    assert np.allclose(df.density, 0.05, atol=1e-3)
    assert {"effective_density", "log10_paths", "median_kappa", "collapsed_blocks"} <= set(df.columns)


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


def test_report_counts_cut_vertices_and_bridges():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(1, 1, bias=False), torch.nn.Linear(1, 1, bias=False))
    G = graphprune.from_model(net, torch.randn(1, 1))
    s = graphprune.report(G).summary
    assert (s["articulation_points"], s["bridges"]) == (1, 2)  # a path of three nodes, by hand
    big = graphprune.report(G, max_cut_edges=1).summary
    assert big["bridges"] is None
