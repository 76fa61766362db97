"""The 2-D image task of the study (procedurally drawn digits, one or three channels) and its 2-D CNN."""

import math

import numpy as np
import pytest
import torch

import graphprune
from graphprune.errors import ParameterError
from graphprune.experiments import build_model, digits2d, load_dataset


@pytest.mark.parametrize("channels", [1, 3])
def test_shape_classes_and_split(channels):
    ds = digits2d(num_samples=300, size=12, channels=channels, seed=3)
    assert ds.x_train.shape == (240, channels * 144) and ds.x_test.shape == (60, channels * 144)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert ds.num_classes == 10 and ds.shape == (channels, 12, 12) and ds.num_features == channels * 144
    y = torch.cat([ds.y_train, ds.y_test]).numpy()
    assert np.bincount(y, minlength=10).tolist() == [30] * 10  # balanced: 300 / 10 of each digit
    # standardised on the training split: mean 0 and sd 1, computed here by numpy
    x = ds.x_train.numpy().astype(np.float64)
    assert abs(x.mean()) < 1e-5 and abs(x.std() - 1) < 1e-4


def test_same_seed_same_images_other_seed_other_images():
    a, b, c = digits2d(num_samples=100, seed=5), digits2d(num_samples=100, seed=5), digits2d(num_samples=100, seed=6)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)
    rgb = load_dataset("digits2d-rgb", num_samples=100, seed=5)
    assert rgb.name == "digits2d-rgb" and rgb.shape == (3, 16, 16)


def test_the_digit_is_drawn_where_its_template_is():
    """Without noise, the pixels of a '1' (a vertical stroke) lie near the image's vertical axis and those of a '0'
    (an ellipse) do not fill its centre: the mean of the images of each class, by hand, from the raw pen."""
    ds = digits2d(num_samples=400, size=16, noise=0.0, seed=0)
    x = torch.cat([ds.x_train, ds.x_test]).numpy().reshape(-1, 16, 16)
    y = torch.cat([ds.y_train, ds.y_test]).numpy()
    pen = x - x.min()  # background is the minimum after standardising a noiseless image
    ones, zeros = pen[y == 1].mean(0), pen[y == 0].mean(0)
    assert ones[:, 6:10].sum() > 0.6 * ones.sum()  # the middle quarter of the columns holds most of the ink
    assert zeros[6:10, 6:10].mean() < 0.5 * zeros.mean()  # a hole in the middle


def test_rgb_background_darker_than_digit_in_every_channel():
    ds = digits2d(num_samples=200, channels=3, noise=0.0, seed=2)
    x = ds.x_train.numpy().reshape(-1, 3, 256)
    hi = x.max(2)  # per image and channel: the digit's colour; the background is the minimum
    lo = x.min(2)
    assert (hi > lo).all()


@pytest.mark.parametrize("bad", [{"channels": 2}, {"num_samples": 5}, {"size": 2}, {"noise": -1.0},
                                 {"seed": -1}])
def test_bad_arguments_name_the_parameter(bad):
    name = next(iter(bad))
    with pytest.raises(ParameterError, match=f"'{name}' parameter of digits2d"):
        digits2d(**bad)


@pytest.mark.parametrize("channels", [1, 3])
def test_cnn2d_shape_weights_and_graph(channels):
    """conv(3x3) -> conv(3x3) -> maxpool -> flatten -> Linear -> Linear; weights counted by hand:
    9 C * 8 + 9 * 8 * 16 + 16 * 8 * 8 * 32 + 32 * 10."""
    model = build_model("cnn2d", features=channels * 256, seed=0)
    n = sum(p.numel() for name, p in model.named_parameters() if name.endswith("weight"))
    assert n == 9 * channels * 8 + 9 * 8 * 16 + 16 * 64 * 32 + 32 * 10
    x = torch.randn(5, channels * 256)
    assert model(x).shape == (5, 10)
    G = graphprune.from_model(model, x[:2])
    assert G.num_weight_edges == n
    sizes = {p.name: p.size for p in G.partitions}
    assert sorted(sizes.values()) == sorted([channels, 8, 16, 16 * 64, 32, 10])
    again = build_model("cnn2d", features=channels * 256, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters()))


def test_cnn2d_refuses_a_size_that_is_no_square_image():
    with pytest.raises(ParameterError, match="'features' parameter of Conv2dNet"):
        build_model("cnn2d", features=40)
    assert math.isqrt(40) ** 2 != 40


# -- the default spectral sparsifier on the 2-D CNN: a flattened feature map counts as its channels ---------------

def _cnn2d_graph(seed=0):
    model = build_model("cnn2d", features=256, seed=seed)
    return graphprune.from_model(model, torch.zeros(2, 256))


def _classes_reached(masks):
    """Classes with a path from the input in the network's channel-level graph, built by hand with networkx from
    the masks: a convolution edge where any tap of a channel pair is kept, the flatten of 16 x 8 x 8 channel-major
    (channel c feeds positions 64 c ... 64 c + 63), then the two Linear layers."""
    nx = pytest.importorskip("networkx")
    H = nx.DiGraph()
    c1 = masks["features.1.weight"].flatten(1).any(1)
    H.add_edges_from(("in", ("c1", o)) for o in np.flatnonzero(c1.numpy()))
    c2 = masks["features.3.weight"].flatten(2).any(2).numpy()  # (out, in)
    H.add_edges_from((("c1", i), ("c2", o)) for o, i in zip(*np.nonzero(c2)))
    H.add_edges_from((("c2", c), ("pos", 64 * c + p)) for c in range(16) for p in range(64))
    f1 = masks["classifier.0.weight"].numpy()
    H.add_edges_from((("pos", j), ("h", i)) for i, j in zip(*np.nonzero(f1)))
    f2 = masks["classifier.2.weight"].numpy()
    H.add_edges_from((("h", j), ("cls", i)) for i, j in zip(*np.nonzero(f2)))
    return {k for k in range(10) if ("cls", k) in H and "in" in H and nx.has_path(H, "in", ("cls", k))}


def test_a_flattened_map_counts_its_channels():
    from graphprune.sparsify.spectral.width import channel_sizes

    G = _cnn2d_graph()
    got = channel_sizes(G)
    flat = next(p.name for p in G.partitions if p.size == 16 * 8 * 8)
    assert got[flat] == 16  # 1024 positions, fed by 16 channels
    assert sorted(v for k, v in got.items() if k != flat) == [1, 8, 10, 16, 32]


def test_erk_budgets_count_the_linear_after_the_flatten_by_its_channels():
    """At 10x no node is removed (E = 3431 / (9 + 24 + 48 + 42) > 8) and the budgets are ERK with the first
    Linear's 1024 inputs counted as its 16 channels: a naive loop over the shapes (8,1,3,3), (16,8,3,3), (32,16),
    (10,32), dense blocks set aside until no density exceeds 1."""
    G = _cnn2d_graph()
    masks = graphprune.sparsify(G, "spectral", density=0.1, seed=0, channels=True)
    sizes = {"features.1.weight": (72, 8 + 1 + 3 + 3), "features.3.weight": (1152, 16 + 8 + 3 + 3),
             "classifier.0.weight": (32768, 32 + 16), "classifier.2.weight": (320, 10 + 32)}
    total, dense = round(0.1 * 34312), {}
    while True:
        rest = {k: v for k, v in sizes.items() if k not in dense}
        eps = (total - sum(dense.values())) / sum(s for _, s in rest.values())
        over = {k: n for k, (n, s) in rest.items() if eps * s / n > 1}
        if not over:
            break
        dense.update(over)
    expect = {k: dense.get(k, round(eps * sizes[k][1])) for k in sizes}
    assert {k: int(m.sum()) for k, m in masks.items()} == expect
    assert expect["classifier.0.weight"] == 1887  # counted by positions (1056 / 32768) it would take far more
    positions = graphprune.sparsify(G, "spectral", density=0.1, seed=0, channels=False)  # positions as nodes
    assert int(positions["classifier.0.weight"].sum()) > 3000 and int(positions["features.3.weight"].sum()) < 200


@pytest.mark.parametrize("compression", [316.2278, 1000])
@pytest.mark.parametrize("options", [{"channels": False, "min_nodes": 4}, {"channels": True, "min_nodes": 4}, {}])
def test_every_class_keeps_a_path_where_the_old_rule_collapsed(compression, options):
    """The issue's collapse, pinned: without the cover floors (``cover=False``, the rule before) the first
    convolution gets one edge or none at 316x and 1000x and at most 4 classes (the last layer's 4 edges or fewer)
    are reachable from the input; with them (counting the flattened map by positions or by channels, and the
    default, which counts it by channels here with ``min_nodes`` 1) every block covers its kept nodes and every
    class has a path (networkx on the masks)."""
    least = options.get("min_nodes", 1)
    for seed in (0, 1):
        G = _cnn2d_graph(seed)
        masks = graphprune.sparsify(G, "spectral", density=1 / compression, seed=seed, **options)
        assert _classes_reached(masks) == set(range(10))
        kept1 = int(masks["features.1.weight"].flatten(1).any(1).sum())
        assert int(masks["features.1.weight"].sum()) >= kept1 >= least  # min_nodes channels, each with an edge
        assert int(masks["classifier.2.weight"].any(1).sum()) == 10  # every class has an in-edge
        assert abs(sum(int(m.sum()) for m in masks.values()) - 34312 / compression) <= 4  # ERK rounds per block
        old = graphprune.sparsify(G, "spectral", density=1 / compression, seed=seed, cover=False, **options)
        if options.get("channels") is False:
            assert int(old["features.1.weight"].sum()) <= 1 and len(_classes_reached(old)) <= 4


def _flat_net(channels, side):
    """Conv2d(1, channels, 3, same) - ReLU - Flatten (channels x side x side) - Linear(., 3)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Unflatten(1, (1, side, side)), torch.nn.Conv2d(1, channels, 3, padding=1),
                                torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(channels * side * side, 3))
    return graphprune.from_model(model, torch.zeros(2, side * side))


@pytest.mark.parametrize("channels, side, spatial", [(4, 2, True), (16, 2, True), (17, 2, False), (36, 3, True),
                                                     (37, 3, False), (64, 4, True), (65, 4, False)])
def test_channels_auto_counts_a_map_with_a_quarter_as_many_positions_as_channels(channels, side, spatial):
    """``channels="auto"``: a flattened C x H x W map counts as C nodes exactly when 4 H W >= C and H W > 1 (16
    channels of 4 positions: yes; 17 of 4: no; 36 of 9: yes; 37 of 9: no); ``min_nodes="auto"`` is
    then 1, else 4. Sizes by hand."""
    from graphprune.sparsify.spectral.width import (
        channel_sizes,
        counted_by_channels,
        resolve_min_nodes,
        spatial_flattens,
    )

    G = _flat_net(channels, side)
    flat = next(p.name for p in G.partitions if p.size == channels * side * side and p.role == "hidden"
                and p.name not in {b.dst for b in G.weight_blocks})
    assert spatial_flattens(G) == ({flat} if spatial else set())
    assert counted_by_channels(G, "auto") == spatial_flattens(G)
    assert counted_by_channels(G, False) == frozenset() and flat in counted_by_channels(G, True)
    sizes = channel_sizes(G, counted_by_channels(G, "auto"))
    assert sizes[flat] == (channels if spatial else channels * side * side)
    assert channel_sizes(G, counted_by_channels(G, True))[flat] == channels  # True counts every such map
    assert resolve_min_nodes(G, "auto") == (1 if spatial else 4) and resolve_min_nodes(G, 3) == 3


@pytest.mark.parametrize("name, features, spatial", [("cnn2d", 256, True), ("cnn2d", 768, True),
                                                     ("cnn2d-wide", 256, True), ("cnn1d-flat", 40, True),
                                                     ("lenet2d", 256, True), ("lenet2d-48", 256, True),
                                                     ("cnn", 40, False), ("conv1d", 40, False),
                                                     ("mlp", 40, False), ("resnet1d", 40, False)])
def test_channels_auto_on_the_study_networks(name, features, spatial):
    """The study's networks under the rule (their flattens by hand: 16 x 64, 32 x 64, 16 x 20, 32 x 16 and 48 x 16
    positions trigger it; 256 x 10 and 25 x 5 do not; the MLP and the global-pooling ResNet have no flatten of a
    map), and the masks it gives: ``spectral-n1``'s (``channels=True, min_nodes=1``) where it triggers, the
    ``channels=False, min_nodes=4`` masks elsewhere."""
    from graphprune.sparsify.spectral.width import spatial_flattens

    G = graphprune.from_model(build_model(name, features=features, seed=0), torch.zeros(2, features))
    assert bool(spatial_flattens(G)) is spatial
    auto = graphprune.sparsify(G, "spectral", density=0.01, seed=1, channels="auto", min_nodes="auto")
    same = (dict(channels=True, min_nodes=1) if spatial else dict(channels=False, min_nodes=4))
    other = (dict(channels=False, min_nodes=4) if spatial else dict(channels=True, min_nodes=1))
    ref = graphprune.sparsify(G, "spectral", density=0.01, seed=1, **same)
    assert all(torch.equal(auto[k], ref[k]) for k in ref)
    if name != "mlp" and name != "resnet1d":  # where the two settings differ at all
        alt = graphprune.sparsify(G, "spectral", density=0.01, seed=1, **other)
        assert any(not torch.equal(auto[k], alt[k]) for k in ref)


@pytest.mark.parametrize("bad", [{"channels": "yes"}, {"min_nodes": "all"}, {"min_nodes": 0}])
def test_channels_and_min_nodes_reject_bad_values(bad):
    G = _flat_net(4, 3)
    name = next(iter(bad))
    with pytest.raises(ParameterError, match=name):
        graphprune.sparsify(G, "spectral", density=0.1, **bad)
