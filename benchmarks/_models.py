"""Model definitions shared by the benchmark scripts (random init, nothing downloaded)."""

import torch
from torch import nn


class GPT2Sized(nn.Module):
    """A GPT-2-small-sized decoder stack: 12 pre-norm blocks of d=768, 12 heads, MLP 3072, a 50257-token
    embedding tied to the output head (attention projections 768x2304 + 768x768, MLP 768x3072 and 3072x768).
    """

    def __init__(self, vocab=50257, d=768, heads=12, ff=3072, layers=12, ctx=64):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(d, heads, ff, dropout=0.0, activation="gelu", batch_first=True,
                                       norm_first=True) for _ in range(layers))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.wte.weight

    def forward(self, ids):
        x = self.wte(ids)
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln(x))


class Stack(nn.Module):
    """The GPT-2-small Linear shapes only (bench_models): 12 x (768->2304, 768->768, 768->3072, 3072->768)."""

    def __init__(self, d=768, ff=3072, layers=12):
        super().__init__()
        self.layers = nn.ModuleList()
        for _ in range(layers):
            self.layers.append(nn.ModuleDict({"qkv": nn.Linear(d, 3 * d), "proj": nn.Linear(d, d),
                                              "fc": nn.Linear(d, ff), "out": nn.Linear(ff, d)}))

    def forward(self, x):
        for blk in self.layers:
            h = blk["qkv"](x)
            h = h[..., : x.shape[-1]] + h[..., x.shape[-1]: 2 * x.shape[-1]] + h[..., 2 * x.shape[-1]:]
            x = x + blk["proj"](h)
            x = x + blk["out"](torch.relu(blk["fc"](x)))
        return x
