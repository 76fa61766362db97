"""The study's fixed training schedule (documented, seeded, CPU-friendly)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

__all__ = ["Schedule", "train", "evaluate"]


@dataclass(frozen=True)
class Schedule:
    """Adam (lr 3e-3, no weight decay), cosine decay to 0 over ``epochs`` epochs of batch ``batch_size``,
    cross-entropy. One seed controls the batch order; the model's initialisation has its own seed."""

    epochs: int = 40
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 0.0

    def as_dict(self):
        return asdict(self)


@torch.no_grad()
def evaluate(model, dataset, split="test", batch_size=1024) -> float:
    """Top-1 accuracy on ``split``."""
    was = model.training
    model.eval()
    correct = total = 0
    for x, y in dataset.loader(split, batch_size=batch_size, shuffle=False):
        correct += int((model(x).argmax(1) == y).sum())
        total += int(y.numel())
    model.train(was)
    return correct / max(total, 1)


def train(model, dataset, schedule: Schedule | None = None, *, seed: int = 0, progress: bool = False) -> dict:
    """Train in place with ``schedule``; masks written by ``apply_masks`` stay enforced (torch.nn.utils.prune
    re-parametrisation). Returns ``{"train_loss", "test_acc", "train_acc"}``."""
    schedule = schedule or Schedule()
    opt = torch.optim.Adam(model.parameters(), lr=schedule.lr, weight_decay=schedule.weight_decay)
    loader = dataset.loader("train", batch_size=schedule.batch_size, seed=seed)
    steps = schedule.epochs * len(loader)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    epochs = range(schedule.epochs)
    if progress:
        from tqdm.auto import tqdm

        epochs = tqdm(epochs, desc="epochs", leave=False)
    model.train()
    loss = torch.tensor(float("nan"))
    for _ in epochs:
        for x, y in loader:
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            sched.step()
    return {"train_loss": float(loss.detach()), "train_acc": evaluate(model, dataset, "train"),
            "test_acc": evaluate(model, dataset, "test")}
