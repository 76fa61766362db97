"""Small architectures used across the tests (random init, deterministic)."""

import torch
from torch import nn


def mlp(sizes=(20, 16, 12, 5)):
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


class LeNet5(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = x.view(x.size(0), -1)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (x if self.short is None else self.short(x)))


class SmallResNet(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.block1 = BasicBlock(8, 8)
        self.block2 = BasicBlock(8, 16, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        x = self.block2(self.block1(torch.relu(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


class DepthwiseSeparable(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8)
        self.pw = nn.Conv2d(8, 16, 1)
        self.grouped = nn.Conv2d(16, 8, 3, stride=2, groups=4)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        x = torch.relu(self.pw(torch.relu(self.dw(torch.relu(self.stem(x))))))
        x = self.grouped(x).mean(dim=(2, 3))
        return self.head(x)


class Conv1dNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv1d(1, 8, 5, stride=2, padding=2)
        self.c2 = nn.Conv1d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 10, 10)

    def forward(self, x):
        x = torch.relu(self.c1(x))
        x = torch.relu(self.c2(x))
        return self.fc(x.flatten(1))


class TinyTransformer(nn.Module):
    """Embedding-free encoder on continuous tokens with a linear read-out of the first token."""

    def __init__(self, d=16, heads=4, ff=32, layers=2, classes=3):
        super().__init__()
        self.inp = nn.Linear(6, d)
        layer = nn.TransformerEncoderLayer(d, heads, ff, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Linear(d, classes)

    def forward(self, x):
        return self.out(self.encoder(self.inp(x))[:, 0])


class AttentionNet(nn.Module):
    """A bare nn.MultiheadAttention inside a custom module, with a residual add."""

    def __init__(self, d=12, heads=3):
        super().__init__()
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.out = nn.Linear(d, 2)

    def forward(self, x):
        a, _ = self.attn(x, x, x)
        return self.out((x + a).mean(1))


class TiedLM(nn.Module):
    """Token embedding whose weight is reused by the output head (tied parameters)."""

    def __init__(self, vocab=11, d=6):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.mix = nn.Linear(d, d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, ids):
        return self.head(torch.relu(self.mix(self.emb(ids))))


class ConcatNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(3, 6, 1)
        self.c = nn.Conv2d(10, 5, 1)

    def forward(self, x):
        return self.c(torch.cat([self.a(x), self.b(x)], dim=1))


MODELS = {
    "mlp": (mlp, lambda: torch.randn(2, 20)),
    "lenet5": (LeNet5, lambda: torch.randn(2, 1, 28, 28)),
    "small_resnet": (SmallResNet, lambda: torch.randn(2, 3, 16, 16)),
    "depthwise": (DepthwiseSeparable, lambda: torch.randn(2, 3, 12, 12)),
    "conv1d": (Conv1dNet, lambda: torch.randn(2, 1, 20)),
    "transformer": (TinyTransformer, lambda: torch.randn(2, 5, 6)),
    "attention": (AttentionNet, lambda: torch.randn(2, 4, 12)),
    "tied": (TiedLM, lambda: torch.randint(0, 11, (2, 7))),
    "concat": (ConcatNet, lambda: torch.randn(2, 3, 8, 8)),
}


def build(name, seed=0):
    torch.manual_seed(seed)
    factory, inputs = MODELS[name]
    return factory(), inputs()


def weight_params(model):
    """Parameters that are edges: every >= 2-D weight (attention projections included), by use count."""
    uses = {}
    for mod in model.modules():
        for p in mod._parameters.values():
            if p is not None and p.dim() >= 2:
                uses.setdefault(id(p), [p, 0])[1] += 1
    return uses
