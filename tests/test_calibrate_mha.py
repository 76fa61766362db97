"""Calibration through ``nn.MultiheadAttention``: its ``out_proj`` never runs as a module (the attention calls
``F.multi_head_attention_forward`` with its weight), so the statistics of its input, the heads' concatenated
outputs, are recovered from the attention call. The reference is a hand-written attention in numpy."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import graphprune


class _Attn(nn.Module):
    def __init__(self, d=8, heads=2, batch_first=True):
        super().__init__()
        self.attn = nn.MultiheadAttention(d, heads, batch_first=batch_first)
        self.out = nn.Linear(d, 3)
        self.batch_first = batch_first

    def forward(self, x):
        a, _ = self.attn(x, x, x)
        return self.out((x + a).mean(1 if self.batch_first else 0))


def _softmax(z):
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def _context(mha, x):
    """concat_h softmax(q_h k_h^T / sqrt(d_h)) v_h for a batch-first x of shape (N, L, E), by hand."""
    W = mha.in_proj_weight.detach().double().numpy()
    b = mha.in_proj_bias.detach().double().numpy()
    E, H = mha.embed_dim, mha.num_heads
    d = E // H
    x = x.double().numpy()
    q, k, v = (x @ W[i * E:(i + 1) * E].T + b[i * E:(i + 1) * E] for i in range(3))
    out = np.zeros_like(q)
    for h in range(H):
        s = slice(h * d, (h + 1) * d)
        att = _softmax(q[..., s] @ np.swapaxes(k[..., s], -1, -2) / np.sqrt(d))
        out[..., s] = att @ v[..., s]
    return out.reshape(-1, E)


def _row_topk(score, k):
    keep = np.zeros(score.shape, dtype=bool)
    for r in range(score.shape[0]):
        order = sorted(range(score.shape[1]), key=lambda j: (-score[r, j], j))
        keep[r, order[:k]] = True
    return keep


@pytest.mark.parametrize("batch_first", [True, False])
def test_wanda_out_proj_sees_the_heads_outputs_of_the_pruned_attention(batch_first):
    torch.manual_seed(0)
    net = _Attn(batch_first=batch_first)
    x = torch.randn(6, 5, 8)  # (N, L, E) batch-first
    xin = x if batch_first else x.transpose(0, 1)
    W_out = net.attn.out_proj.weight.detach().double().numpy().copy()
    masks = graphprune.prune(net, xin[:1] if batch_first else xin[:, :1], "wanda", sparsity=0.5, calibration=xin,
                             permanent=True, progress=False)
    ctx = _context(net.attn, x)  # in_proj is pruned now: the out_proj stage saw the pruned q, k, v
    want = _row_topk(np.abs(W_out) * np.sqrt((ctx**2).sum(0))[None, :], 4)
    assert np.array_equal(masks["attn.out_proj.weight"].numpy(), want)
    norms_dense_input = np.sqrt((x.double().numpy().reshape(-1, 8) ** 2).sum(0))
    assert not np.array_equal(want, _row_topk(np.abs(W_out) * norms_dense_input[None, :], 4))  # can tell


def test_every_calibrated_method_runs_on_a_transformer_encoder_and_leaves_no_hook():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
    net = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    x = torch.randn(4, 5, 8)
    for method in ("wanda", "sparsegpt", "ria", "flow"):
        m = copy.deepcopy(net)
        masks = graphprune.prune(m, x[:1], method, sparsity=0.5, calibration=x, permanent=True, progress=False)
        assert all(abs(float(v.float().mean()) - 0.5) < 0.02 for v in masks.values()), method
        assert not any(mod._forward_pre_hooks for mod in m.modules())
        w = dict(net.named_parameters())
        for k, p in m.named_parameters():  # only the masked parameters changed (sparsegpt/flow also update kept ones)
            if k not in masks and not k.endswith("bias"):
                assert torch.equal(p, w[k]), (method, k)
