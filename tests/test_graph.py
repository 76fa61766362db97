import numpy as np
import pytest
import torch
from models import build

import graphprune
from graphprune.errors import GraphValidationError, MaskError, ParameterError
from graphprune.graph import Block, MultipartiteGraph, Partition


def _naive_edges(G):
    """Global (src, dst, |w|) of every kept edge by an explicit Python loop over parameter elements."""
    out = []
    for b in G.blocks:
        so, do = G.node_offset(b.src), G.node_offset(b.dst)
        if not b.is_weight:
            out += [(so + s, do + d, 1.0) for s, d in zip(b.src_index, b.dst_index)]
            continue
        w = b.weight.detach().double()
        m = G.block_mask(b)
        for idx in np.ndindex(*w.shape):
            if not m[idx]:
                continue
            if b.layout == "linear":
                s, d = idx[1], idx[0]
            elif b.layout == "embedding":
                s, d = idx[0], idx[1]
            else:  # conv
                og = w.shape[0] // b.groups
                s, d = (idx[0] // og) * w.shape[1] + idx[1], idx[0]
            out.append((so + s, do + d, abs(float(w[idx]))))
    return out


@pytest.mark.parametrize("name", ["lenet5", "depthwise", "tied", "attention"])
def test_adjacency_and_laplacian_against_naive_loop(name):
    model, x = build(name)
    G = graphprune.from_model(model, x)
    G = G.with_masks(graphprune.sparsify(G, "random", sparsity=0.6, seed=3))
    n = G.num_nodes
    A = np.zeros((n, n))
    for s, d, w in _naive_edges(G):
        A[s, d] += w
    assert np.allclose(G.adjacency(directed=True).toarray(), A)
    S = A + A.T
    L = G.laplacian().toarray()
    assert np.allclose(L, np.diag(S.sum(1)) - S)
    assert np.allclose(L.sum(1), 0)
    deg_out = np.zeros(n, int)
    deg_in = np.zeros(n, int)
    for s, d, _ in _naive_edges(G):
        deg_out[s] += 1
        deg_in[d] += 1
    assert np.array_equal(G.degrees("out"), deg_out) and np.array_equal(G.degrees("in"), deg_in)
    assert G.num_edges == len(_naive_edges(G))


def test_with_masks_returns_new_graph_and_masks_only_shrink():
    model, x = build("mlp")
    G = graphprune.from_model(model, x)
    m1 = graphprune.sparsify(G, "random", sparsity=0.5, seed=0)
    H = G.with_masks(m1)
    assert G.density() == 1.0 and not G.is_masked
    assert H.density() == pytest.approx(0.5, abs=1e-3)
    m2 = {k: torch.ones_like(v) for k, v in m1.items()}  # all-True cannot revive pruned edges
    assert torch.equal(H.with_masks(m2).masks["0.weight"], m1["0.weight"])
    assert G.with_masks(m1).with_masks(None, combine=False).density() == 1.0
    assert H.blocks[0].weight is G.blocks[0].weight  # weights shared, not copied


def test_mask_errors_name_the_problem():
    model, x = build("mlp")
    G = graphprune.from_model(model, x)
    with pytest.raises(MaskError, match="mask for 'nope.weight', which backs no block"):
        G.with_masks({"nope.weight": torch.ones(2, 2, dtype=torch.bool)})
    with pytest.raises(MaskError, match=r"shape \(3, 3\).*\(16, 20\)"):
        G.with_masks({"0.weight": torch.ones(3, 3, dtype=torch.bool)})
    with pytest.raises(MaskError, match="boolean or hold only 0 and 1"):
        G.with_masks({"0.weight": torch.full((16, 20), 0.5)})
    assert G.with_masks({"0.weight": torch.zeros(16, 20)}).density(per_param=True)["0.weight"] == 0.0


def test_validate_reports_by_name():
    w = torch.randn(3, 4)
    parts = [Partition("in", 4, "input"), Partition("out", 2, "output"), Partition("lost", 5)]
    blocks = [Block("fc", "in", "out", param="fc.weight", weight=w),
              Block("skip", "in", "out", kind="identity", src_index=np.array([0, 9]), dst_index=np.array([0, 1]),
                    meta={"n_src": 4, "n_dst": 2})]
    G = MultipartiteGraph(parts, blocks)
    problems = G.validate(raise_on_error=False)
    assert any("block 'fc'" in p and "3" in p for p in problems)
    assert any("block 'skip': source index out of range" in p for p in problems)
    assert any("partition 'lost': dangling" in p for p in problems)
    with pytest.raises(GraphValidationError, match="dangling"):
        G.validate()


def test_lookup_errors_and_repr():
    model, x = build("lenet5")
    G = graphprune.from_model(model, x)
    with pytest.raises(GraphValidationError, match="No block named 'fc9'"):
        G.block("fc9")
    with pytest.raises(ParameterError, match="'view'"):
        G.biadjacency("conv1", view="unrolled")
    assert "MultipartiteGraph(partitions=7" in repr(G)
    text = G.summary()
    assert "conv2" in text and "feature" in text


def test_density_counts_tied_parameter_once():
    model, x = build("tied")
    G = graphprune.from_model(model, x)
    m = G.masks
    m["emb.weight"][:5] = False  # 5 of 11 rows
    H = G.with_masks(m)
    total = 11 * 6 + 6 * 6
    assert H.density() == pytest.approx((total - 30) / total)
    assert H.num_edges == G.num_edges - 2 * 30  # both uses lose the edges
