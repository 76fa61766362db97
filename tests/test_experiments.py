import copy
import math

import numpy as np
import pandas as pd
import pytest
import torch

import graphprune
from graphprune.errors import ParameterError
from graphprune.experiments import (
    METHODS,
    Schedule,
    build_model,
    markdown_table,
    mnist1d,
    paired_differences,
    paired_table,
    run_study,
    synthetic,
    train,
)
from graphprune.sparsify.saliency import GraSPSparsifier, SNIPSparsifier, SynFlowSparsifier


@pytest.fixture(scope="module")
def task():
    ds = synthetic(num_samples=400, num_features=12, num_classes=3, seed=0)
    model = build_model("mlp", features=12, classes=3, seed=0)
    return ds, model, graphprune.from_model(model, ds.x_train[:2])


def test_mnist1d_generated_locally_and_cached(tmp_path):
    ds = mnist1d(data_dir=str(tmp_path))
    assert ds.x_train.shape == (4000, 40) and ds.x_test.shape == (1000, 40) and ds.num_classes == 10
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["mnist1d_n5000_s42.npz", "mnist1d_n5000_s42.npz.sha256.json"]
    again = mnist1d(data_dir=str(tmp_path))
    assert torch.equal(again.x_train, ds.x_train)
    (tmp_path / "mnist1d_n5000_s42.npz").write_bytes(b"corrupted")  # bad checksum: regenerated
    fixed = mnist1d(data_dir=str(tmp_path))
    assert torch.equal(fixed.y_test, ds.y_test)


def test_model_zoo_exports():
    for name, size in [("mlp", 40 * 256 + 256 * 256 + 2560), ("lenet300", 40 * 300 + 300 * 100 + 1000)]:
        G = graphprune.from_model(build_model(name), torch.randn(2, 40))
        assert G.num_weight_edges == size
    assert build_model("conv1d")(torch.randn(3, 40)).shape == (3, 10)
    assert build_model("resnet1d")(torch.randn(3, 40)).shape == (3, 10)
    with pytest.raises(ParameterError, match="'name' parameter of build_model"):
        build_model("vgg")


def _grads_by_hand(model, ds, batches=1):
    m = copy.deepcopy(model)
    loader = ds.loader("train", batch_size=128, seed=0)
    for i, (x, y) in enumerate(loader):
        if i >= batches:
            break
        torch.nn.functional.cross_entropy(m(x), y).backward()
    return {n: p.grad for n, p in m.named_parameters()}


def test_snip_scores_are_grad_times_weight(task):
    ds, model, G = task
    sp = SNIPSparsifier(density=0.3, model=model, data=ds.loader("train", batch_size=128, seed=0), batches=1)
    sp.validate()
    scores = sp.compute_scores(G)
    grads = _grads_by_hand(model, ds)
    for n in G.params:
        torch.testing.assert_close(scores[n], (grads[n] * dict(model.named_parameters())[n]).abs().detach())
    masks = sp.sparsify(G)
    assert sum(int(m.sum()) for m in masks.values()) == round(0.3 * G.num_weight_edges)


def test_synflow_scores_match_closed_form_on_linear_net():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3, bias=False), torch.nn.Linear(3, 2, bias=False))
    G = graphprune.from_model(net, torch.randn(1, 4))
    sp = SynFlowSparsifier(density=0.5, model=net, input_shape=(4,))
    sp.validate()
    s = sp.compute_scores(G)
    W1, W2 = (m.weight.detach().abs().double() for m in net)
    # R = 1^T W2 W1 1: dR/dW1[i, j] = (1^T W2)_i, dR/dW2[k, i] = (W1 1)_i
    want1 = (torch.ones(2, dtype=torch.float64) @ W2)[:, None] * torch.ones(4, dtype=torch.float64)[None] * W1
    want2 = torch.ones(2, 1, dtype=torch.float64) * (W1 @ torch.ones(4, dtype=torch.float64))[None] * W2
    torch.testing.assert_close(s["0.weight"], want1)
    torch.testing.assert_close(s["1.weight"], want2)


def test_iterative_synflow_hits_density_and_shrinks(task):
    ds, model, G = task
    m = SynFlowSparsifier(density=0.05, model=model, input_shape=(12,), iterations=10).sparsify(G)
    assert sum(int(v.sum()) for v in m.values()) == round(0.05 * G.num_weight_edges)


def test_grasp_runs_and_does_not_touch_the_model(task):
    ds, model, G = task
    before = {k: v.clone() for k, v in model.state_dict().items()}
    m = GraSPSparsifier(density=0.2, model=model, data=ds.loader("train", seed=0), batches=2).sparsify(G)
    assert sum(int(v.sum()) for v in m.values()) == round(0.2 * G.num_weight_edges)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_data_dependent_scorers_need_data(task):
    _, model, G = task
    with pytest.raises(ParameterError, match="data-dependent"):
        SNIPSparsifier(density=0.5, model=model).sparsify(G)
    with pytest.raises(ParameterError, match="The .model. parameter of SNIPSparsifier must be the torch.nn.Module "
                                             "the graph was exported from"):
        SNIPSparsifier(density=0.5).sparsify(G)


def test_training_keeps_masks_and_learns(task):
    ds, _, _ = task
    model = build_model("mlp", features=12, classes=3, seed=1)
    G = graphprune.from_model(model, ds.x_train[:2])
    masks = graphprune.sparsify(G, "spectral", density=0.2, seed=0)
    graphprune.apply_masks(model, G, masks)
    res = train(model, ds, Schedule(epochs=5), seed=0)
    assert res["test_acc"] > 0.6  # three well separated clusters
    assert torch.all(model[0].weight[~masks["0.weight"]] == 0)


def test_study_is_resumable_and_reproducible(tmp_path):
    kw = dict(methods=["spectral", "random"], compressions=[10.0], seeds=[0], schedule=Schedule(epochs=2),
              progress=False, spectral_metrics=False, dataset_kwargs=dict(num_samples=300, num_features=10))
    first = run_study("mlp", "synthetic", out_dir=str(tmp_path / "a"), **kw)
    assert first["ran"] == 2
    again = run_study("mlp", "synthetic", out_dir=str(tmp_path / "a"), **kw)
    assert again["ran"] == 0 and len(again["frame"]) == 2
    other = run_study("mlp", "synthetic", out_dir=str(tmp_path / "b"), **kw)
    a = first["frame"].sort_values("method").reset_index(drop=True)
    b = other["frame"].sort_values("method").reset_index(drop=True)
    assert a.test_acc.tolist() == b.test_acc.tolist()  # same seeds, same numbers
    assert np.allclose(a.density, 0.1, atol=1e-3)
    assert (tmp_path / "a" / "study_mlp_synthetic.png").exists()
    md = open(first["markdown"]).read()
    assert "| spectral |" in md and "| random |" in md


def test_markdown_table_marks_collapse():
    df = pd.DataFrame(dict(method=["spectral", "spectral"], compression=[10.0, 10.0], seed=[0, 1],
                           test_acc=[0.5, 0.7], layer_collapse=[False, True]))
    md = markdown_table(df)
    assert "60.0 (50.0-70.0) C1/2" in md


def _pairs():
    # seeds 0-3 of both, plus a seed 4 of "b" only (not paired); a second compression with one seed each
    return pd.DataFrame(dict(
        method=["a"] * 4 + ["b"] * 5 + ["a", "b"], compression=[10.0] * 9 + [100.0, 100.0],
        seed=[0, 1, 2, 3, 0, 1, 2, 3, 4, 0, 0], test_acc=[0.5, 0.6, 0.7, 0.8, 0.4, 0.6, 0.5, 0.9, 0.1, 0.3, 0.2],
        layer_collapse=[False] * 11))


def test_paired_differences_by_hand():
    """Differences a - b on seeds 0-3: 0.1, 0, 0.2, -0.1 (seed 4 has no pair). Mean 0.05; sample standard
    deviation sqrt((0.05^2 + 0.05^2 + 0.15^2 + 0.15^2) / 3) = sqrt(0.05 / 3); the 97.5% quantile of Student's t
    with 3 degrees of freedom is 3.182446 (tables), so the half-width is 3.182446 * sqrt(0.05 / 3) / 2."""
    t = paired_differences(_pairs(), "a", "b")
    r = t[t.compression == 10.0].iloc[0]
    half = 3.182446 * math.sqrt(0.05 / 3) / 2
    assert r.n == 4 and r["mean_a"] == pytest.approx(0.65) and r["mean_b"] == pytest.approx(0.6)
    assert (r["diff"], r["low"], r["high"]) == pytest.approx((0.05, 0.05 - half, 0.05 + half), abs=1e-6)
    one = t[t.compression == 100.0].iloc[0]  # one seed: a difference, no interval
    assert one.n == 1 and one["diff"] == pytest.approx(0.1) and math.isnan(one["low"])
    # scipy's paired t-test gives the same interval
    from scipy import stats
    ci = stats.ttest_rel([0.5, 0.6, 0.7, 0.8], [0.4, 0.6, 0.5, 0.9]).confidence_interval(0.95)
    assert (r["low"], r["high"]) == pytest.approx((ci.low, ci.high))
    md = paired_table(_pairs(), "a", "b")
    assert "| 10x | 4 | 65.0 | 60.0 | +5.0 [" in md and "(one seed)" in md


def test_paired_differences_bad_input():
    with pytest.raises(ParameterError, match=r"'b' parameter of paired_differences names method 'c'"):
        paired_differences(_pairs(), "a", "c")
    with pytest.raises(ParameterError, match=r"'level' parameter"):
        paired_differences(_pairs(), "a", "b", level=95)


def test_methods_cover_the_issue():
    assert {"snip", "grasp", "synflow", "synflow-iter", "magnitude", "random", "random-erk", "degree", "spectral",
            "spectral-rolled", "spectral-reweight", "spectral-erk", "spectral-guard"} <= set(METHODS)
    assert math.isclose(min(graphprune.experiments.COMPRESSIONS), 10**0.5, rel_tol=1e-4)
    assert math.isclose(max(graphprune.experiments.COMPRESSIONS), 1000)



def test_post_training_arm(tmp_path):
    """The post arm trains each seed's dense model once (cached), prunes it, and records accuracy before and after
    the fine-tune; with density 1 nothing is pruned, so the pruned accuracy equals the dense model's."""
    from graphprune.experiments import FINETUNE, POST_METHODS, Schedule

    assert FINETUNE.epochs == 5 and {"magnitude", "magnitude-layer", "random", "spectral", "spectral-reweight",
                                     "snip", "elementwise", "elementwise-reweight"} <= set(POST_METHODS)
    kw = dict(methods=["magnitude", "spectral-reweight", "elementwise-reweight"], compressions=[1.0, 10.0],
              seeds=[0], schedule=Schedule(epochs=3), finetune=Schedule(epochs=1, lr=1e-3), progress=False,
              spectral_metrics=False, dataset_kwargs={"num_samples": 300, "num_features": 12, "num_classes": 3},
              arm="post")
    out = run_study("mlp", "synthetic", out_dir=str(tmp_path), **kw)
    f = out["frame"]
    assert out["csv"].endswith("study_mlp_synthetic_post.csv") and len(f) == 6
    assert (tmp_path / "dense" / "mlp_synthetic_s0.pt").exists()
    assert f.dense_acc.nunique() == 1 and f.dense_acc.iloc[0] > 0.5
    dense = f[f.compression == 1.0]
    assert np.allclose(dense.test_acc_pruned, dense.dense_acc)  # nothing pruned, scales all 1
    assert (f[f.compression == 10.0].density.round(3) == 0.1).all()
    assert (f.mask_seconds >= 0).all()
    md = open(out["markdown"]).read()
    assert "With no fine-tuning" in md and "| elementwise-reweight |" in md
    with pytest.raises(ParameterError, match="unknown method.*'degree'.*arm 'post'"):
        run_study("mlp", "synthetic", out_dir=str(tmp_path), **{**kw, "methods": ["degree"]})
    again = run_study("mlp", "synthetic", out_dir=str(tmp_path), **kw)
    assert again["ran"] == 0


def test_wide_cnn_has_enough_weights_to_tell():
    model = build_model("cnn", features=40, classes=10)
    G = graphprune.from_model(model, torch.randn(2, 40))
    assert G.num_weight_edges == 320 + 64 * 128 * 5 + 128 * 256 * 5 + 256 * 10 * 10 == 230720
    assert G.num_weight_edges / 1000 > 200


@pytest.mark.parametrize("name, features, weights, flat", [
    # weights by hand: conv c_in * c_out * k, then the Linear layers; flat = (channels, positions) of the flatten
    ("cnn2d-wide", 256, 1 * 16 * 9 + 16 * 32 * 9 + 32 * 64 * 32 + 32 * 10, (32, 64)),
    ("lenet2d", 256, 1 * 16 * 9 + 16 * 32 * 9 + 32 * 16 * 32 + 32 * 10, (32, 16)),
    ("cnn2d-deep", 256, 1 * 8 * 9 + 8 * 16 * 9 + 16 * 24 * 9 + 24 * 64 * 32 + 32 * 10, (24, 64)),
    ("cnn2d-deep", 768, 3 * 8 * 9 + 8 * 16 * 9 + 16 * 24 * 9 + 24 * 64 * 32 + 32 * 10, (24, 64)),
    ("cnn1d-flat", 40, 1 * 8 * 5 + 8 * 16 * 5 + 16 * 20 * 64 + 64 * 10, (16, 20)),
    ("cnn1d-deep", 40, 1 * 12 * 3 + 2 * 12 * 12 * 3 + 12 * 40 * 32 + 32 * 10, (12, 40)),
    ("lenet2d-48", 256, 1 * 16 * 9 + 16 * 48 * 9 + 48 * 16 * 32 + 32 * 10, (48, 16)),
    ("lenet2d-24", 768, 3 * 8 * 9 + 8 * 24 * 9 + 24 * 16 * 32 + 32 * 10, (24, 16)),
    ("cnn1d-32", 40, 1 * 16 * 5 + 16 * 32 * 5 + 32 * 20 * 64 + 64 * 10, (32, 20)),
])
def test_held_out_networks_have_the_registered_shapes(name, features, weights, flat):
    """The networks of the registered tests of ``channels="auto"`` (docs/source/guides/study.md): their weight
    counts and the flattened map (channels, positions) that decides whether the rule applies (4 positions >=
    channels)."""
    from graphprune.sparsify.spectral.width import spatial_flattens

    G = graphprune.from_model(build_model(name, features=features), torch.randn(2, features))
    assert G.num_weight_edges == weights
    c, pos = flat
    assert any(p.size == c * pos for p in G.partitions)
    assert bool(spatial_flattens(G)) is (4 * pos >= c)


def test_spectrum_against_accuracy_plot_and_rank_correlation(tmp_path):
    """Spearman's rho from the plot equals scipy's on the same columns; a perfectly monotone toy frame gives -1."""
    from scipy import stats

    from graphprune.experiments.study import plot_spectrum_vs_accuracy

    df = pd.DataFrame(dict(method=["random", "spectral", "snip", "random"], compression=[10.0] * 4,
                           test_acc=[0.9, 0.7, 0.5, 0.3], median_kappa=[1.5, 3.0, 9.0, 40.0],
                           median_ramanujan_gap_rolled=[0.1, float("nan"), 0.3, 0.2]))
    corr = plot_spectrum_vs_accuracy(df, tmp_path / "s.png")
    assert (tmp_path / "s.png").exists()
    assert corr["median_kappa"]["spearman_rho"] == pytest.approx(-1.0) and corr["median_kappa"]["runs"] == 4
    ok = df.dropna()
    assert corr["median_ramanujan_gap_rolled"]["spearman_rho"] == pytest.approx(
        stats.spearmanr(ok.median_ramanujan_gap_rolled, ok.test_acc)[0])
    assert corr["median_ramanujan_gap_rolled"]["runs"] == 3


def test_rolled_ramanujan_gap_by_hand():
    """Dense Linear(8 -> 6) and Linear(6 -> 4): complete bipartite graphs, whose 0/1 biadjacency has one non-zero
    singular value, so mu_hat = 0 and the gap is sqrt(d_L - 1) + sqrt(d_R - 1): sqrt(7) + sqrt(5) = 4.8818 and
    sqrt(5) + sqrt(3) = 3.9681; the study records their median, 4.4250."""
    from graphprune.experiments.study import _rolled_gap

    net = torch.nn.Sequential(torch.nn.Linear(8, 6, bias=False), torch.nn.ReLU(), torch.nn.Linear(6, 4, bias=False))
    G = graphprune.from_model(net, torch.randn(1, 8))
    expect = np.median([math.sqrt(7) + math.sqrt(5), math.sqrt(5) + math.sqrt(3)])
    assert _rolled_gap(G, {}) == pytest.approx(expect, rel=1e-6)
    keep_one_row = {"0.weight": torch.zeros(6, 8, dtype=torch.bool).index_fill_(0, torch.tensor([0]), True)}
    assert math.isnan(_rolled_gap(G, {**keep_one_row, "2.weight": torch.eye(4, 6, dtype=torch.bool)}))


def test_rows_with_new_columns_are_appended_under_the_right_headers(tmp_path):
    from graphprune.experiments.study import _append_row

    csv = str(tmp_path / "s.csv")
    pd.DataFrame([dict(method="a", test_acc=0.5)]).to_csv(csv, index=False)  # an older file, fewer columns
    _append_row(csv, dict(method="b", dense_acc=0.9, test_acc=0.7))
    _append_row(csv, dict(method="c", test_acc=0.1, dense_acc=0.8))
    f = pd.read_csv(csv)
    assert f.method.tolist() == ["a", "b", "c"] and f.test_acc.tolist() == [0.5, 0.7, 0.1]
    assert math.isnan(f.dense_acc[0]) and f.dense_acc[1:].tolist() == [0.9, 0.8]


def test_sparsifier_inputs_one_reading_for_cli_and_study():
    """cli.py and experiments/study.py both ask _validation.sparsifier_inputs; its answers, written out by hand."""
    from graphprune._validation import sparsifier_inputs

    expected = {"snip": "loader", "grasp": "loader", "synflow": "loader", "wanda": "calibration",
                "ria": "calibration", "sparsegpt": "calibration", "flow": "calibration"}
    for name in graphprune.available_sparsifiers():
        cls = graphprune.get_sparsifier(name)
        if not cls.__module__.startswith("graphprune."):
            continue
        assert sparsifier_inputs(cls).data_kind == expected.get(name), name
    assert sparsifier_inputs(graphprune.get_sparsifier("synflow")).input_shape
    assert not sparsifier_inputs(graphprune.get_sparsifier("snip")).input_shape
