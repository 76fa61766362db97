import numpy as np
import pytest
import torch
from models import build

import graphprune
from graphprune.errors import GraphValidationError, MaskError, ParameterError
from graphprune.graph import Block, MultipartiteGraph, Partition
from graphprune.layout import Grid


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


# -- the block layout (graphprune.layout.Grid) against naive loops ---------------------------------------------------
#: (layout, weight shape, groups, param_slice, full parameter shape)
GRIDS = [
    ("linear", (3, 4), 1, None, (3, 4)),
    ("embedding", (5, 3), 1, None, (5, 3)),
    ("conv", (6, 2, 3, 2), 3, None, (6, 2, 3, 2)),  # grouped 2-D convolution
    ("conv", (4, 3, 1), 1, None, (4, 3, 1)),  # 1x1 (1-D) convolution: the weight is the biadjacency
    ("conv", (4, 3, 2), 1, None, (4, 3, 2)),
    ("conv_transpose", (6, 2, 2, 3), 2, None, (6, 2, 2, 3)),
    ("conv_transpose", (3, 4, 2), 1, None, (3, 4, 2)),
    ("linear", (2, 4), 1, (2, 4), (6, 4)),  # rows 2:4 of a packed (6, 4) parameter (q, k or v)
]


def _naive_edge(layout, shape, groups, idx, view="channel"):
    """(src, dst) of the element at multi-index ``idx``, written from the layout's definition."""
    if layout == "linear":  # (out, in)
        return idx[1], idx[0]
    if layout == "embedding":  # (in, out)
        return idx[0], idx[1]
    K = int(np.prod(shape[2:]))
    tap = int(np.ravel_multi_index(idx[2:], shape[2:])) if len(shape) > 2 else 0
    if layout == "conv":  # (out, in/g, *k): output o sees the inputs of its group
        src, dst = (idx[0] // (shape[0] // groups)) * shape[1] + idx[1], idx[0]
    else:  # conv_transpose (in, out/g, *k): input i feeds the outputs of its group
        src, dst = idx[0], (idx[0] // (shape[0] // groups)) * shape[1] + idx[1]
    return (src * K + tap if view == "rolled" else src), dst


def _grid_loop(spec, view="channel"):
    layout, shape, groups, _, _ = spec
    pairs = [_naive_edge(layout, shape, groups, idx, view) for idx in np.ndindex(*shape)]
    return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])


@pytest.mark.parametrize("spec", GRIDS, ids=lambda s: f"{s[0]}{s[1]}g{s[2]}{'s' if s[3] else ''}")
def test_grid_edges_and_sizes_against_a_loop(spec):
    layout, shape, groups, rows, _ = spec
    g = Grid(layout, shape, groups, rows)
    for view in ("channel", "rolled"):
        s, d = _grid_loop(spec, view)
        gs, gd = g.edge_index(view)
        np.testing.assert_array_equal(gs, s)
        np.testing.assert_array_equal(gd, d)
        assert g.view_shape(view) == (d.max() + 1, s.max() + 1)
        picked = np.array([0, len(s) - 1, len(s) // 2])
        es, ed = g.edge_index(view, elements=picked)
        np.testing.assert_array_equal(es, s[picked])
        np.testing.assert_array_equal(ed, d[picked])
    s, d = _grid_loop(spec)
    assert (g.n_src, g.n_dst) == (s.max() + 1, d.max() + 1)
    assert g.kernel_size == (int(np.prod(shape[2:])) if layout.startswith("conv") else 1)


@pytest.mark.parametrize("spec", GRIDS, ids=lambda s: f"{s[0]}{s[1]}g{s[2]}{'s' if s[3] else ''}")
def test_grid_biadjacency_and_its_inverse_against_a_loop(spec):
    layout, shape, groups, rows, _ = spec
    g = Grid(layout, shape, groups, rows)
    rng = np.random.default_rng(0)
    vals = rng.uniform(0.1, 2.0, int(np.prod(shape)))
    for view in ("channel", "rolled"):
        s, d = _grid_loop(spec, view)
        B = np.zeros(g.view_shape(view))
        for e in range(vals.size):  # parallel edges add up
            B[d[e], s[e]] += vals[e]
        np.testing.assert_allclose(g.biadjacency(torch.from_numpy(vals), view).numpy(), B, rtol=1e-15)
        np.testing.assert_allclose(g.biadjacency(vals, view, format="scipy").toarray(), B, rtol=1e-15)
        R = rng.uniform(size=B.shape)
        back = g.from_biadjacency(torch.from_numpy(R), view).numpy()
        np.testing.assert_array_equal(back, [R[d[e], s[e]] for e in range(vals.size)])
        if view == "rolled":  # no parallel edges: the biadjacency's inverse gives the values back
            np.testing.assert_array_equal(g.from_biadjacency(g.biadjacency(torch.from_numpy(vals), view), view),
                                          vals)
    s, d = _grid_loop(spec)
    x = torch.from_numpy(vals.reshape(shape))
    B = np.zeros((g.n_dst, g.n_src))
    np.add.at(B, (d, s), vals)
    np.testing.assert_allclose(g.pairs(g.fold(x, torch.float64).numpy()).toarray(), B, rtol=1e-14)
    out_sum, in_sum = g.node_sums(g.fold(x, torch.float64), torch.float64)
    np.testing.assert_allclose(out_sum, np.bincount(s, vals, minlength=g.n_src), rtol=1e-14)
    np.testing.assert_allclose(in_sum, np.bincount(d, vals, minlength=g.n_dst), rtol=1e-14)
    sv, dv = rng.uniform(size=g.n_src), rng.uniform(size=g.n_dst)
    S, D = (np.broadcast_to(a, shape).reshape(-1) for a in g.broadcast_nodes(sv, dv))
    np.testing.assert_array_equal(S, sv[s])
    np.testing.assert_array_equal(D, dv[d])
    M = g.dst_matrix(x)
    if layout == "conv_transpose":
        assert M is None
    else:  # row o holds exactly the elements whose destination is o
        for o in range(g.n_dst):
            assert sorted(M[o].tolist()) == sorted(vals[d == o].tolist())
        assert torch.equal(g.from_dst_matrix(M), x)


@pytest.mark.parametrize("spec", GRIDS, ids=lambda s: f"{s[0]}{s[1]}g{s[2]}{'s' if s[3] else ''}")
def test_grid_rows_of_the_whole_parameter(spec):
    layout, shape, groups, rows, full_shape = spec
    g = Grid(layout, shape, groups, rows)
    start = rows[0] if rows else 0
    full = torch.arange(int(np.prod(full_shape))).reshape(full_shape)
    expect_idx = [int(np.ravel_multi_index((idx[0] + start,) + idx[1:], full_shape)) for idx in np.ndindex(*shape)]
    np.testing.assert_array_equal(g.param_index(), expect_idx)
    assert g.rows(full).reshape(-1).tolist() == expect_idx
    mask = torch.ones(full_shape, dtype=torch.bool)
    part = torch.zeros(shape, dtype=torch.bool)
    part.view(-1)[::2] = True
    g.and_rows(mask, part)
    assert [i for i in range(mask.numel()) if not mask.view(-1)[i]] == expect_idx[1::2]
    g.or_rows(mask, torch.ones(shape, dtype=torch.bool))
    assert bool(mask.all())
    dst = torch.zeros(full_shape, dtype=torch.long)
    g.set_rows(dst, torch.ones(shape, dtype=torch.long))
    assert sorted(torch.nonzero(dst.view(-1)).view(-1).tolist()) == expect_idx


def test_block_uses_its_grid_and_edge_values_invert_the_biadjacency():
    model, x = build("attention")
    G = graphprune.from_model(model, x)
    sliced = [b for b in G.weight_blocks if b.param_slice is not None]
    assert sliced
    for b in G.blocks:
        B = G.biadjacency(b, format="torch", masked=False, dtype=torch.float64)
        back = b.edge_values(B)  # every edge reads its own pair's weight: |w| (no parallel edges here)
        expect = b.abs_weight().double() if b.is_weight else torch.ones(b.num_edges, dtype=torch.float64)
        torch.testing.assert_close(back, expect.reshape(-1), rtol=0, atol=0)
    b = sliced[0]
    assert b.grid is b.grid and b.grid.param_slice == b.param_slice
    full = G.param_mask(b.param).clone()
    assert torch.equal(b.rows(full), full[b.param_slice[0] : b.param_slice[1]])
    with pytest.raises(GraphValidationError, match="Unknown block layout 'diagonal'"):
        Grid("diagonal", (2, 2))
    with pytest.raises(GraphValidationError, match="identity block"):
        _ = next(c for c in G.blocks if not c.is_weight).grid


@pytest.mark.parametrize("spec", GRIDS, ids=lambda s: f"{s[0]}{s[1]}g{s[2]}{'s' if s[3] else ''}")
def test_grid_order_says_when_the_weight_is_the_biadjacency(spec):
    layout, shape, groups, rows, _ = spec
    g = Grid(layout, shape, groups, rows)
    s, d = _grid_loop(spec)
    flat = np.arange(s.size)
    if g.order == "dst":
        np.testing.assert_array_equal(flat, d * g.n_src + s)
    elif g.order == "src":
        np.testing.assert_array_equal(flat, s * g.n_dst + d)
    else:  # parallel (kernel taps) or grouped edges: the elements are not one full (dst, src) grid
        assert s.size != g.n_src * g.n_dst or groups > 1 or layout == "conv_transpose"
    # by hand: which of the specs are full grids, and in which order
    expect = {"linear": "dst", "embedding": "src"}.get(layout)
    if layout == "conv" and groups == 1 and int(np.prod(shape[2:])) == 1:
        expect = "dst"
    assert g.order == expect


def test_block_kept_counts_without_building_a_mask():
    """block_kept: the block's size when its parameter has no mask, the True entries of its rows otherwise
    (a packed in_proj's q rows counted by hand)."""
    model = torch.nn.MultiheadAttention(8, 2, batch_first=True)
    x = torch.randn(1, 3, 8)
    G = graphprune.from_model(model, (x, x, x))
    q = next(b for b in G.weight_blocks if b.param == "in_proj_weight" and b.param_slice == (0, 8))
    assert G.block_kept(q) == 64 and G.block_kept(q.name) == 64
    m = torch.ones(24, 8, dtype=torch.bool)
    m[0, :5] = False  # 5 edges of the q rows
    m[10, :3] = False  # 3 of the k rows
    H = G.with_masks({"in_proj_weight": m})
    assert H.block_kept(q) == 64 - 5
    k = next(b for b in G.weight_blocks if b.param == "in_proj_weight" and b.param_slice == (8, 16))
    assert H.block_kept(k) == 64 - 3
    ident = next(b for b in G.blocks if not b.is_weight)
    assert H.block_kept(ident) == ident.num_edges
