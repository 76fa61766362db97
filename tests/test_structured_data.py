"""Data-aware node scores (graphprune.structured.activations): the criteria on the activation-weighted graph,
against hand computations in numpy (norms of the inputs, a pseudo-inverse Laplacian for the leverage)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import graphprune
from graphprune.errors import ParameterError
from graphprune.structured import node_groups, node_scores, select_nodes


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 12), nn.ReLU(), nn.Linear(12, 4))


def _data(seed=1):
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(seed))
    return x * torch.tensor([5.0, 0.1, 1, 1, 3, 0.2, 1, 1])  # uneven input scales: the data matters


def _hand(net, x):
    """(scaled W1, scaled W2): |w_ij| * ||X_j|| with X the dense inputs of each layer."""
    W1 = net[0].weight.detach().double().numpy()
    W2 = net[2].weight.detach().double().numpy()
    xd = x.double().numpy()
    h = np.maximum(xd @ W1.T + net[0].bias.detach().double().numpy(), 0)
    return np.abs(W1) * np.sqrt((xd**2).sum(0))[None], np.abs(W2) * np.sqrt((h**2).sum(0))[None]


def _hidden_scores(G, net, x, criterion):
    groups = node_groups(G)
    s = node_scores(G, criterion, groups=groups, model=net, calibration=x)
    hidden = [g for g in groups if set(g.nodes) == {"0"} and g.prunable]
    out = np.zeros(12)
    for g in hidden:
        out[g.nodes["0"]] = s[g.id]
    return out


def test_data_aware_l2_is_the_diagonal_obd_cost_by_hand():
    net, x = _net(), _data()
    G = graphprune.from_model(net, x[:1])
    A, B = _hand(net, x)
    want = ((A**2).sum(1) + (B**2).sum(0)) / 2  # mean over the two weights at the neuron: its row and its column
    want = want / want.mean()
    assert np.allclose(_hidden_scores(G, net, x, "l2"), want, rtol=1e-9)
    plain = node_scores(G, "l2")
    assert not np.array_equal(np.argsort(plain[: len(want)]), np.argsort(want))  # the fixture can tell


def _leverage_by_pinv(W):
    """Per-node sums of w_e R_e / sum(w_e R_e) on the bipartite graph of W (rows: dst, columns: src)."""
    n_dst, n_src = W.shape
    n = n_src + n_dst
    A = np.zeros((n, n))
    A[:n_src, n_src:] = W.T
    A[n_src:, :n_src] = W
    Lp = np.linalg.pinv(np.diag(A.sum(1)) - A)
    v = np.zeros_like(W)
    for o in range(n_dst):
        for i in range(n_src):
            e = np.zeros(n)
            e[i], e[n_src + o] = 1, -1
            v[o, i] = W[o, i] * (e @ Lp @ e)
    v = v / v.sum()
    return v.sum(0), v.sum(1)  # per source, per destination


def test_data_aware_leverage_against_a_pinv_laplacian():
    net, x = _net(), _data()
    G = graphprune.from_model(net, x[:1])
    A, B = _hand(net, x)
    _, into_hidden = _leverage_by_pinv(A)
    out_of_hidden, _ = _leverage_by_pinv(B)
    assert np.allclose(_hidden_scores(G, net, x, "leverage"), into_hidden + out_of_hidden, rtol=1e-6)


def test_prune_structured_with_calibration_shrinks_by_the_data_aware_choice():
    net, x = _net(), _data()
    ref = copy.deepcopy(net)
    keep = graphprune.prune(net, x[:1], "l2", sparsity=0.5, calibration=x, structured=True, progress=False)
    A, B = _hand(ref, x)
    score = (A**2).sum(1) + (B**2).sum(0)
    assert set(np.flatnonzero(keep["0"])) == set(np.argsort(score)[6:])  # the 6 largest by hand stay
    assert net[0].out_features == 6 and net[2].in_features == 6
    masked = copy.deepcopy(ref)
    with torch.no_grad():
        masked[0].weight[~torch.as_tensor(keep["0"])] = 0
        masked[0].bias[~torch.as_tensor(keep["0"])] = 0
    assert torch.allclose(net(x), masked(x), atol=1e-6)


def test_model_and_calibration_go_together_and_nothing_changes_on_error():
    net, x = _net(), _data()
    G = graphprune.from_model(net, x[:1])
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(ParameterError, match="'model' and 'calibration' together"):
        select_nodes(G, 0.5, calibration=x)
    with pytest.raises(ParameterError, match="calibration"):
        graphprune.prune(net, x[:1], "l2", sparsity=0.5, calibration=torch.randn(4, 3), structured=True,
                         progress=False)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert net[0].out_features == 12
