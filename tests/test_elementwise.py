"""Element-wise sparsification (Achlioptas-McSherry w^2 sampling, Drineas-Zouzias |w| sampling)."""

import numpy as np
import pytest
import torch
from scipy import stats

import graphprune
from graphprune.errors import ParameterError
from graphprune.sparsify import check_sparsifier, get_sparsifier


def _graph(n_out=3, n_in=4, seed=0):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(n_in, n_out, bias=False))
    return graphprune.from_model(net, torch.randn(1, n_in)), net


@pytest.mark.parametrize("power", [2, 1])
def test_single_draw_follows_the_magnitude_distribution(power):
    """k = 1: the kept entry has probability |w|^power / sum |w|^power (chi-square), and is not uniform."""
    G, net = _graph()
    W = net[0].weight.detach().abs().double().numpy().reshape(-1)
    p = W ** power / (W ** power).sum()
    runs = 3000
    counts = np.zeros(W.size)
    for seed in range(runs):
        counts += graphprune.sparsify(G, "elementwise", density=1 / 12, seed=seed, power=power)["0.weight"] \
            .reshape(-1).numpy()
    assert counts.sum() == runs
    assert stats.chisquare(counts, runs * p).pvalue > 1e-3
    assert stats.chisquare(counts, np.full(W.size, runs / W.size)).pvalue < 1e-6


def test_two_draws_inclusion_and_reweighting():
    """k = 2 of 5 by successive sampling: P(e kept) = p_e + sum_{j != e} p_j p_e / (1 - p_j) (hand derivation);
    the Monte Carlo frequencies match it and the recorded scales 1/pi are within 10% of 1/P."""
    G, net = _graph(n_out=1, n_in=5, seed=3)
    W = net[0].weight.detach().abs().double().numpy().reshape(-1)
    p = W ** 2 / (W ** 2).sum()
    exact = np.array([p[e] + sum(p[j] * p[e] / (1 - p[j]) for j in range(5) if j != e) for e in range(5)])
    assert exact.sum() == pytest.approx(2.0)
    runs = 4000
    counts = np.zeros(5)
    scales = np.zeros(5)
    for seed in range(runs):
        sp = get_sparsifier("elementwise")(density=0.4, seed=seed, reweight=True)
        m = sp.sparsify(G)["0.weight"].reshape(-1).numpy()
        counts += m
        scales = np.where(m, sp.scales_["0.weight"].reshape(-1).numpy(), scales)
    np.testing.assert_allclose(counts / runs, exact, atol=0.03)
    np.testing.assert_allclose(scales, 1 / exact, rtol=0.10)
    # unbiased (to the accuracy of the 1/pi approximation): E[scale * mask * w] ~ w
    np.testing.assert_allclose(scales * counts / runs * W, W, rtol=0.12, atol=0.03 * W.max())


@pytest.mark.parametrize("options", [{}, {"power": 1}, {"reweight": True}])
def test_elementwise_conforms(options):
    check_sparsifier(get_sparsifier("elementwise"), options=options)


def test_scales_reach_the_model():
    G, net = _graph()
    sp = get_sparsifier("elementwise")(sparsity=0.5, seed=0, reweight=True)
    masks = sp.sparsify(G)
    w0 = net[0].weight.detach().clone()
    graphprune.apply_masks(net, G, masks, scales=sp.scales_)
    m = masks["0.weight"]
    torch.testing.assert_close(net[0].weight[m], (w0 * sp.scales_["0.weight"].float())[m])
    assert bool((net[0].weight[~m] == 0).all())


@pytest.mark.parametrize("bad, match", [({"power": 3}, "'power'"), ({"power": True}, "'power'"),
                                        ({"reweight": "yes"}, "'reweight'"),
                                        ({"allocation": "global"}, "cannot be 'global'")])
def test_elementwise_bad_input(bad, match):
    G, _ = _graph()
    with pytest.raises(ParameterError, match=match):
        graphprune.sparsify(G, "elementwise", sparsity=0.5, **bad)
