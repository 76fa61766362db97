"""Offline data for the study: MNIST-1D generated locally by the ``mnist1d`` package, and a synthetic task.

Nothing is downloaded. MNIST-1D [1]_ is generated with ``mnist1d.data.make_dataset`` (a few seconds) and cached under
``data/`` as an ``.npz`` with a SHA-256 checksum next to it; a cache whose checksum does not match is regenerated.

References
----------
.. [1] S. Greydanus, D. Kobak. "Scaling down Deep Learning with MNIST-1D", ICML 2024.
   doi:10.48550/arXiv.2011.14439
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

import numpy as np
import torch

from .._validation import DATASETS, Options, check_param

__all__ = ["Dataset", "mnist1d", "synthetic", "load_dataset", "DEFAULT_DATA_DIR"]

DEFAULT_DATA_DIR = os.environ.get("GRAPHPRUNE_DATA", os.path.join(os.getcwd(), "data"))


@dataclass
class Dataset:
    """Train and test tensors (float inputs ``(N, features)``, int64 labels) and the number of classes."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

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
    """A dataset by name: one of :data:`graphprune._validation.DATASETS` (``"mnist1d"``, ``"synthetic"``)."""
    check_param("dataset", name, [Options(DATASETS)], "load_dataset")
    return mnist1d(**kwargs) if name == "mnist1d" else synthetic(**kwargs)
