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

