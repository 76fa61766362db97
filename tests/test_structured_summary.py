"""shrink_summary and count_macs against MACs and parameter counts derived by hand."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import graphprune
from graphprune.errors import ParameterError
from graphprune.structured import count_macs, shrink_summary


class _Conv(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(self.dw(torch.relu(self.c1(x))).mean((2, 3)))


def test_macs_by_hand_for_conv_depthwise_linear_and_attention():
    net = _Conv()
    m = count_macs(net, torch.randn(2, 3, 6, 6))
    assert m == {"c1": 2 * 8 * 36 * 3 * 9, "dw": 2 * 8 * 36 * 1 * 9, "fc": 2 * 5 * 8}
    att = nn.MultiheadAttention(12, 3, batch_first=True)
    x = torch.randn(2, 7, 12)
    assert count_macs(att, (x, x, x)) == {"": 2 * 7 * (12 * 36 + 12 * 12)}  # q, k, v and out projections


def test_summary_of_a_halved_mlp_by_hand():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    small = copy.deepcopy(net)
    keep = graphprune.prune(small, torch.randn(1, 8), "l2", sparsity=0.5, structured=True, progress=False)
    G = graphprune.from_model(net, torch.randn(1, 8))
    net.train()
    net[2].eval()
    s = shrink_summary(net, small, torch.randn(4, 8), G=G, node_masks=keep, runs=2)
    assert [m.training for m in net] == [True, True, False]  # every module's own flag restored
    assert list(s.layers.params_before) == [8 * 16 + 16, 16 * 2 + 2]
    assert list(s.layers.params_after) == [8 * 8 + 8, 8 * 2 + 2]
    assert list(s.layers.macs_before) == [4 * 16 * 8, 4 * 2 * 16] and list(s.layers.macs_after) == [4 * 8 * 8,
                                                                                                     4 * 2 * 8]
    assert list(s.layers.shape_after) == ["8→8", "8→2"]
    assert s.summary["mac_ratio"] == pytest.approx((512 + 128) / (256 + 64))
    assert s.summary["latency_before_s"] > 0 and s.summary["speedup"] > 0
    assert s.nodes.to_dict("records") == [dict(partition="0", nodes=16, kept=8, removed=8)]
    assert "| module |" in s.to_markdown()


def test_bad_arguments_name_the_parameter():
    net = nn.Linear(3, 2)
    with pytest.raises(ParameterError, match="'after' parameter"):
        shrink_summary(net, "small", torch.randn(1, 3))
    with pytest.raises(ParameterError, match="'node_masks' parameter .* needs 'G'"):
        shrink_summary(net, net, torch.randn(1, 3), node_masks={})
    with pytest.raises(ParameterError, match="'runs'"):
        shrink_summary(net, net, torch.randn(1, 3), runs=0)


def test_edge_masks_drop_every_edge_at_a_removed_node_by_a_loop():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3), nn.Flatten(), nn.Linear(64, 3))
    x = torch.randn(1, 3, 8, 8)
    G = graphprune.from_model(net, x)
    keep = graphprune.select_nodes(G, 0.5, criterion="l2")
    m = graphprune.structured.edge_masks(G, keep)
    k0, k2 = keep["0"], keep["2"]  # conv channels kept
    for o in range(8):
        for i in range(3):
            assert bool(m["0.weight"][o, i].all()) == bool(m["0.weight"][o, i].any()) == bool(k0[o])
    for o in range(4):
        for i in range(8):
            assert bool(m["2.weight"][o, i].all()) == bool(k2[o] and k0[i])
    for f in range(64):  # the flatten: feature f is channel f // 16
        assert bool(m["4.weight"][:, f].all()) == bool(k2[f // 16])
    with pytest.raises(ParameterError, match="one bool per node"):
        graphprune.structured.edge_masks(G, {"0": [True] * 3})


def test_report_shows_the_structured_summary_in_page_markdown_and_json():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    small = copy.deepcopy(net)
    x = torch.randn(4, 8)
    keep = graphprune.prune(small, x[:1], "l2", sparsity=0.5, structured=True, progress=False)
    G = graphprune.from_model(net, x[:1])
    s = shrink_summary(net, small, x, G=G, node_masks=keep, runs=2)
    rep = graphprune.report(G, graphprune.structured.edge_masks(G, keep), structured=s, spectral=False)
    assert rep.summary["density"] == pytest.approx((8 * 8 + 8 * 2) / (8 * 16 + 16 * 2))  # the kept grid
    page, md, doc = rep.to_html(), rep.to_markdown(), rep.to_dict()
    assert "Structured pruning" in page and "178 → 90" in page  # weights and biases, by hand
    assert "## Structured pruning" in md and "178 → 90" in md
    assert doc["structured"]["summary"]["params_after"] == 90
    assert doc["structured"]["nodes"] == [dict(partition="0", nodes=16, kept=8, removed=8)]
    assert "structured" not in graphprune.report(G, spectral=False).to_dict()
    with pytest.raises(ParameterError, match="'structured' parameter of report"):
        graphprune.report(G, structured={"params": 1})


def test_compare_puts_structured_candidates_side_by_side():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    x = torch.randn(4, 8)
    G = graphprune.from_model(net, x[:1])
    cands, summaries = {}, {}
    for crit, amount in (("l2", 0.5), ("random", 0.25)):
        small = copy.deepcopy(net)
        keep = graphprune.prune(small, x[:1], crit, sparsity=amount, structured=True, progress=False)
        cands[crit] = graphprune.structured.edge_masks(G, keep)
        summaries[crit] = shrink_summary(net, small, x, G=G, node_masks=keep, runs=1)
    cmp = graphprune.compare(cands, G, spectral=False, structured=summaries)
    assert cmp.frame.loc["l2", "params_after"] == 8 * 8 + 8 + 8 * 2 + 2
    assert cmp.frame.loc["random", "params_after"] == 8 * 12 + 12 + 12 * 2 + 2  # 4 of 16 removed
    assert cmp.frame.loc["l2", "mac_ratio"] == pytest.approx((4 * 16 * 8 + 4 * 2 * 16) / (4 * 8 * 8 + 4 * 2 * 8))
    page = cmp.to_html()
    assert "MAC reduction" in page and "speed-up" in page and "Structured pruning" not in page.split("<h2")[0]
    with pytest.raises(ParameterError, match="naming only candidates"):
        graphprune.compare(cands, G, spectral=False, structured={"other": summaries["l2"]})
