"""Offline data for the study: MNIST-1D generated locally by the ``mnist1d`` package, procedurally drawn 2-D
digits (one or three channels), and a synthetic task.

Nothing is downloaded. MNIST-1D [1]_ is generated with ``mnist1d.data.make_dataset`` (a few seconds) and cached under
``data/`` as an ``.npz`` with a SHA-256 checksum next to it; a cache whose checksum does not match is regenerated.
The 2-D digits (:func:`digits2d`) are drawn by numpy alone from stroke templates written in this module (no font,
no file), in the spirit of MNIST-1D's templates, so the same seed gives the same images on any machine.

References
----------
.. [1] S. Greydanus, D. Kobak. "Scaling down Deep Learning with MNIST-1D", ICML 2024.
   doi:10.48550/arXiv.2011.14439
"""

from __future__ import annotations

import hashlib
import json
import numbers
import os
from dataclasses import dataclass

import numpy as np
import torch

from .._validation import DATASETS, Options, check_param

__all__ = ["Dataset", "mnist1d", "digits2d", "synthetic", "load_dataset", "DEFAULT_DATA_DIR"]

DEFAULT_DATA_DIR = os.environ.get("GRAPHPRUNE_DATA", os.path.join(os.getcwd(), "data"))


@dataclass
class Dataset:
    """Train and test tensors (float inputs ``(N, features)``, int64 labels) and the number of classes.

    Images are stored flattened, channel-major (``(N, C * H * W)``), so every model of the zoo takes them and the
    2-D CNN unflattens them itself (:class:`~graphprune.experiments.models.Conv2dNet`).
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    shape: tuple | None = None  # (C, H, W) of image inputs, stored flattened; None for vectors

    @property
    def num_features(self) -> int:
        return int(self.x_train.shape[1])

    def loader(self, split: str = "train", *, batch_size: int = 128, shuffle: bool = True, seed: int = 0):
        """A DataLoader over ``split`` with its own seeded shuffling generator."""
        from torch.utils.data import DataLoader, TensorDataset

        x, y = (self.x_train, self.y_train) if split == "train" else (self.x_test, self.y_test)
        g = torch.Generator().manual_seed(seed)
        return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle and split == "train",
                          generator=g)


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def mnist1d(*, num_samples: int = 5000, seed: int = 42, data_dir: str | None = None, cache: bool = True) -> Dataset:
    """MNIST-1D (40 features, 10 classes; 80/20 train/test split) generated locally, cached with a checksum.

    Parameters
    ----------
    num_samples : int, default 5000
        Total samples generated (the package default); more gives a larger training set.
    seed : int, default 42
        The generator's seed (the package default gives the reference dataset).
    data_dir : str, optional
        Cache folder (default ``$GRAPHPRUNE_DATA`` or ``./data``).
    """
    data_dir = data_dir or DEFAULT_DATA_DIR
    path = os.path.join(data_dir, f"mnist1d_n{num_samples}_s{seed}.npz")
    meta = path + ".sha256.json"
    arrays = None
    if cache and os.path.exists(path) and os.path.exists(meta):
        with open(meta) as f:
            want = json.load(f).get("sha256")
        if want == _sha256(path):
            with np.load(path) as z:
                arrays = {k: z[k] for k in z.files}
    if arrays is None:
        try:
            from mnist1d.data import get_dataset_args, make_dataset
        except ImportError as exc:
            from ..errors import MissingDependencyError

            raise MissingDependencyError("MNIST-1D needs the 'mnist1d' package: pip install mnist1d") from exc
        args = get_dataset_args()
        args.num_samples = int(num_samples)
        args.seed = int(seed)
        d = make_dataset(args)  # generated in memory; nothing downloaded
        arrays = {"x": d["x"].astype(np.float32), "y": d["y"].astype(np.int64),
                  "x_test": d["x_test"].astype(np.float32), "y_test": d["y_test"].astype(np.int64)}
        if cache:
            os.makedirs(data_dir, exist_ok=True)
            np.savez(path, **arrays)
            with open(meta, "w") as f:
                json.dump({"sha256": _sha256(path), "num_samples": num_samples, "seed": seed}, f)
    return Dataset("mnist1d", torch.from_numpy(arrays["x"]), torch.from_numpy(arrays["y"]),
                   torch.from_numpy(arrays["x_test"]), torch.from_numpy(arrays["y_test"]), 10)


def _arc(cx, cy, rx, ry, t0, t1, n):
    t = np.radians(np.linspace(t0, t1, n))
    return np.stack([cx + rx * np.cos(t), cy - ry * np.sin(t)], 1)


def _digit_strokes():
    """Stroke templates of the digits 0-9: per digit, a list of polylines in the unit square (x right, y down)."""
    A = _arc

    def P(*pts):
        return np.array(pts, dtype=float)

    return [
        [A(0.5, 0.5, 0.28, 0.4, 0, 360, 17)],
        [P((0.32, 0.28), (0.52, 0.1), (0.52, 0.9))],
        [np.concatenate([A(0.5, 0.32, 0.26, 0.22, 160, -30, 8), P((0.22, 0.9), (0.8, 0.9))])],
        [A(0.48, 0.3, 0.25, 0.2, 160, -90, 9), A(0.48, 0.7, 0.28, 0.2, 90, -160, 9)],
        [P((0.62, 0.9), (0.62, 0.1), (0.2, 0.65), (0.82, 0.65))],
        [np.concatenate([P((0.76, 0.1), (0.32, 0.1), (0.28, 0.46)), A(0.5, 0.66, 0.27, 0.24, 130, -160, 10)])],
        [np.concatenate([P((0.7, 0.12)), A(0.5, 0.66, 0.26, 0.24, 150, 530, 14)])],
        [P((0.2, 0.1), (0.8, 0.1), (0.42, 0.9))],
        [A(0.5, 0.29, 0.22, 0.19, 0, 360, 13), A(0.5, 0.7, 0.27, 0.21, 0, 360, 13)],
        [np.concatenate([A(0.5, 0.34, 0.26, 0.24, -30, 330, 14), P((0.76, 0.34), (0.66, 0.9))])],
    ]


def digits2d(*, num_samples: int = 5000, size: int = 16, channels: int = 1, noise: float = 0.25,
             seed: int = 0) -> Dataset:
    """Procedurally drawn 2-D digits (10 classes, ``channels x size x size``; 80/20 train/test split), no download.

    Each image is one digit's stroke template (polylines in the unit square, written in this module) with its
    control points jittered (sd 0.025), under a random affine map (rotation within +-20 degrees, scale 0.75-1.05,
    aspect 0.85-1.15, shear +-0.25, shift +-0.1), drawn with an anti-aliased pen of random half-width (0.045-0.085 of
    the side), plus Gaussian pixel noise. With ``channels=3`` the digit and the background get random colours
    (each channel of the background uniform in [0, 0.4], of the digit in [0.6, 1]), with independent noise per
    channel. Classes are balanced. Inputs are standardised (mean 0, sd 1
    over the training set) and flattened channel-major, like MNIST-1D's: ``(N, channels * size * size)``.

    Parameters
    ----------
    num_samples : int, default 5000
        Total images (4000 train and 1000 test by default, MNIST-1D's split).
    size : int, default 16
        Side in pixels.
    channels : {1, 3}, default 1
    noise : float, default 0.25
        Standard deviation of the pixel noise (the pen's intensity is 1).
    seed : int, default 0
        Everything random (labels' order, templates' jitter, maps, pens, colours, noise) comes from this seed; same
        seed, same arrays, on any machine (numpy only).

    Notes
    -----
    Cost: ``O(num_samples * segments * size^2)``, about a second for the default. Nothing is cached on disk.

    Examples
    --------
    >>> ds = digits2d(num_samples=200, channels=3, seed=1)
    >>> tuple(ds.x_train.shape), ds.num_classes, ds.shape
    ((160, 768), 10, (3, 16, 16))
    """
    from .._validation import Interval, check_param

    check_param("num_samples", num_samples, [Interval(numbers.Integral, 20, None)], "digits2d")
    check_param("size", size, [Interval(numbers.Integral, 4, None)], "digits2d")
    check_param("channels", channels, [Options((1, 3))], "digits2d")
    check_param("noise", noise, [Interval(numbers.Real, 0, None)], "digits2d")
    check_param("seed", seed, [Interval(numbers.Integral, 0, None)], "digits2d")
    n = int(num_samples)
    rng = np.random.default_rng(int(seed))
    strokes = _digit_strokes()
    y = rng.permutation(np.arange(n) % 10)
    g = (np.arange(size) + 0.5) / size
    px = np.stack(np.meshgrid(g, g, indexing="xy"), -1).reshape(-1, 2)  # pixel centres (x, y), row-major
    ang = np.radians(rng.uniform(-20, 20, n))
    scale = rng.uniform(0.75, 1.05, n)
    aspect = rng.uniform(0.85, 1.15, n)
    shear = rng.uniform(-0.25, 0.25, n)
    shift = rng.uniform(-0.1, 0.1, (n, 2))
    half = rng.uniform(0.045, 0.085, n)
    c, s = np.cos(ang), np.sin(ang)
    rot = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)
    lin = np.zeros((n, 2, 2))
    lin[:, 0, 0], lin[:, 1, 1], lin[:, 0, 1] = scale * aspect, scale / aspect, shear * scale
    maps = rot @ lin
    pen = np.zeros((n, px.shape[0]))
    for k in range(10):
        idx = np.flatnonzero(y == k)
        dist = np.full((idx.size, px.shape[0]), np.inf)
        for poly in strokes[k]:
            pts = poly[None] + rng.normal(0.0, 0.025, (idx.size,) + poly.shape)
            pts = np.einsum("nij,nmj->nmi", maps[idx], pts - 0.5) + 0.5 + shift[idx, None]
            a, ab = pts[:, :-1, None], (pts[:, 1:] - pts[:, :-1])[:, :, None]  # (n, segments, 1, 2)
            t = np.clip(((px - a) * ab).sum(-1) / np.maximum((ab ** 2).sum(-1), 1e-12), 0.0, 1.0)
            near = a + t[..., None] * ab  # nearest point of each segment to each pixel
            dist = np.minimum(dist, np.sqrt(((px - near) ** 2).sum(-1)).min(1))
        pen[idx] = np.clip((half[idx, None] - dist) * size + 0.5, 0.0, 1.0)  # one-pixel anti-aliased edge
    pen = pen[:, None]
    if channels == 1:
        x = pen
    else:
        bg = rng.uniform(0.0, 0.4, (n, 3, 1))  # a dark background and a light digit, each of a random colour
        fg = rng.uniform(0.6, 1.0, (n, 3, 1))
        x = bg * (1.0 - pen) + fg * pen
    x = (x + noise * rng.standard_normal((n, channels, size * size))).reshape(n, -1)
    cut = int(0.8 * n)
    mu, sd = x[:cut].mean(), x[:cut].std()
    x = ((x - mu) / max(sd, 1e-12)).astype(np.float32)
    t = torch.from_numpy
    name = "digits2d" if channels == 1 else "digits2d-rgb"
    return Dataset(name, t(x[:cut]), t(y[:cut].astype(np.int64)), t(x[cut:]), t(y[cut:].astype(np.int64)), 10,
                   shape=(int(channels), int(size), int(size)))


def synthetic(*, num_samples: int = 1200, num_features: int = 40, num_classes: int = 4, seed: int = 0) -> Dataset:
    """A fast synthetic task: Gaussian class clusters in ``num_features`` dims (75/25 split), for tests."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((num_classes, num_features)) * 1.5
    y = rng.integers(0, num_classes, num_samples)
    x = (centers[y] + rng.standard_normal((num_samples, num_features))).astype(np.float32)
    cut = int(0.75 * num_samples)
    t = torch.from_numpy
    return Dataset("synthetic", t(x[:cut]), t(y[:cut]), t(x[cut:]), t(y[cut:]), num_classes)


def load_dataset(name: str, **kwargs) -> Dataset:
    """A dataset by name: one of :data:`graphprune._validation.DATASETS`: ``"mnist1d"``, ``"synthetic"``,
    ``"digits2d"`` (one channel) or ``"digits2d-rgb"`` (:func:`digits2d` with ``channels=3``)."""
    check_param("dataset", name, [Options(DATASETS)], "load_dataset")
    if name == "mnist1d":
        return mnist1d(**kwargs)
    if name in ("digits2d", "digits2d-rgb"):
        return digits2d(**{"channels": 3 if name == "digits2d-rgb" else 1, **kwargs})
    return synthetic(**kwargs)
