"""Structured pruning: coupled node groups, and the physical shrink checked against the masked model.

Reference models are built by hand: the masked model zeroes, with explicit indexing written here, the outgoing
weights of the removed nodes (the consumer's columns), which is what removing a node means for the outputs.
"""

import copy
import tempfile

import numpy as np
import pytest
import torch
from models import build
from torch import nn

import graphprune
from graphprune.errors import MaskError, ParameterError
from graphprune.structured import ShrinkError, node_groups, node_masks_from_groups, shrink


def _export(name):
    m, x = build(name)
    m.eval()
    return m, x, graphprune.from_model(m, x)


def _by_layer(groups, kind=None):
    out = {}
    for g in groups:
        if g.prunable and (kind is None or g.kind == kind):
            out.setdefault(g.layer, []).append(g)
    return out


def _sig(g):
    return {p: idx.tolist() for p, idx in g.nodes.items()}


# -- groups ----------------------------------------------------------------------------------------------------
def test_mlp_groups_are_single_neurons_and_the_ends_are_refused():
    _, _, G = _export("mlp")  # 20 -> 16 -> 12 -> 5
    groups = node_groups(G)
    ok = [g for g in groups if g.prunable]
    assert sorted((g.layer, len(g.nodes[g.layer])) for g in ok) == sorted([("0", 1)] * 16 + [("2", 1)] * 12)
    ends = [g for g in groups if not g.prunable]
    assert len(ends) == 20 + 5
    assert all("input" in g.reason or "output" in g.reason for g in ends)
    count = np.zeros(G.num_nodes, dtype=int)  # every node in exactly one group
    for g in groups:
        for p, idx in g.nodes.items():
            count[G.node_offset(p) + idx] += 1
    assert (count == 1).all()


def test_residual_groups_tie_every_writer_of_the_add():
    _, _, G = _export("small_resnet")
    groups = node_groups(G)
    ok = [_sig(g) for g in groups if g.prunable]
    # hand count: the stem's 8 channels go with block1's second conv and its add (identity shortcut); block1.conv1
    # (8) and block2.conv1 (16) alone; block2's second conv, its 1x1 shortcut and the add (16) together
    expected = ([{"stem": [c], "block1.conv2": [c], "add": [c]} for c in range(8)]
                + [{"block1.conv1": [c]} for c in range(8)] + [{"block2.conv1": [c]} for c in range(16)]
                + [{"block2.conv2": [c], "block2.short.0": [c], "add_1": [c]} for c in range(16)])
    assert sorted(map(str, ok)) == sorted(map(str, expected))


def test_depthwise_and_grouped_convolutions_go_by_convolution_group():
    _, _, G = _export("depthwise")  # dw: 8 -> 8, groups 8; grouped: 16 -> 8, groups 4
    ok = [_sig(g) for g in node_groups(G) if g.prunable]
    expected = ([{"stem": [c], "dw": [c]} for c in range(8)]
                + [{"pw": list(range(4 * k, 4 * k + 4)), "grouped": [2 * k, 2 * k + 1]} for k in range(4)])
    assert sorted(map(str, ok)) == sorted(map(str, expected))


def test_concatenation_maps_each_operand_to_its_offset():
    _, _, G = _export("concat")  # cat([a (4), b (6)]) -> c
    ok = [_sig(g) for g in node_groups(G) if g.prunable]
    expected = [{"a": [c], "cat": [c]} for c in range(4)] + [{"b": [c], "cat": [4 + c]} for c in range(6)]
    assert sorted(map(str, ok)) == sorted(map(str, expected))


def test_tied_weights_tie_the_embedding_width_to_the_head_input():
    _, _, G = _export("tied")  # emb (11 x 6) reused by head: emb column i is head column i, fed by mix output i
    ok = [_sig(g) for g in node_groups(G) if g.prunable]
    assert sorted(map(str, ok)) == sorted(map(str, [{"emb": [i], "mix": [i]} for i in range(6)]))


def test_packed_multihead_attention_heads_are_refused_with_the_reason():
    _, _, G = _export("transformer")
    groups = node_groups(G)
    heads = [g for g in groups if g.kind == "head"]
    assert len(heads) == 2 * 4 and not any(g.prunable for g in heads)
    assert all("in_proj_weight" in g.reason for g in heads)
    width = [g for g in groups if g.kind == "width"]
    assert len(width) == 16 and all("LayerNorm" in g.mixed[0] and "embed_dim" in g.reason for g in width)
    ff = _by_layer(groups, "neuron")
    assert sorted(len(v) for v in ff.values()) == [32, 32]  # the feed-forward neurons of each layer


def test_skipped_module_makes_its_groups_unprunable():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(6))

        def forward(self, x):
            return x * self.scale.flip(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.odd, self.b = nn.Linear(4, 6), Odd(), nn.Linear(6, 2)

        def forward(self, x):
            return self.b(self.odd(self.a(x)))

    with pytest.warns(UserWarning):
        G = graphprune.from_model(Net(), torch.randn(1, 4), leaf_modules=(Odd,), skip_unsupported=True)
    groups = [g for g in node_groups(G) if "a" in g.nodes]
    assert groups and not any(g.prunable for g in groups)
    assert all("'odd'" in g.reason and "no adapter" in g.reason for g in groups)


def test_node_groups_refuses_what_is_not_a_graph():
    with pytest.raises(ParameterError, match="'G' parameter of node_groups"):
        node_groups("graph")


# -- shrink equals the masked model ----------------------------------------------------------------------------
def _zero_columns(model, consumers, removed):
    """Reference: zero the input columns ``removed[layer]`` of every consumer weight (hand-written indexing)."""
    ref = copy.deepcopy(model)
    params = dict(ref.named_parameters())
    with torch.no_grad():
        for layer, cols in removed.items():
            for name in consumers[layer]:
                params[name][:, cols] = 0
    return ref


def _remove(G, groups, ids):
    return node_masks_from_groups(G, groups, ids)


def test_shrink_mlp_equals_the_masked_model():
    m, x, G = _export("mlp")
    groups = node_groups(G)
    layers = _by_layer(groups)
    rm0, rm2 = [g.id for g in layers["0"][::2]], [g.id for g in layers["2"][1::3]]
    cols = {"0": [g.nodes["0"][0] for g in layers["0"][::2]], "2": [g.nodes["2"][0] for g in layers["2"][1::3]]}
    ref = _zero_columns(m, {"0": ["2.weight"], "2": ["4.weight"]}, cols)
    shrink(m, G, _remove(G, groups, rm0 + rm2))
    assert (m[0].out_features, m[2].in_features, m[2].out_features, m[4].in_features) == (8, 8, 8, 8)
    assert m[0].bias.shape == (8,) and m[2].bias.shape == (8,)
    torch.testing.assert_close(m(x), ref(x), rtol=1e-5, atol=1e-6)


def test_shrink_residual_cnn_equals_the_masked_model():
    m, x, G = _export("small_resnet")
    groups = node_groups(G)
    layers = _by_layer(groups)
    pick = {"stem": [1, 4, 6], "block1.conv1": [0, 7], "block2.conv1": list(range(0, 16, 3)),
            "block2.conv2": [2, 3, 11, 15]}
    ids = [g.id for layer, cs in pick.items() for g in layers[layer] if g.nodes[layer][0] in cs]
    consumers = {"stem": ["block1.conv1.weight", "block2.conv1.weight", "block2.short.0.weight"],
                 "block1.conv1": ["block1.conv2.weight"], "block2.conv1": ["block2.conv2.weight"],
                 "block2.conv2": ["fc.weight"]}
    ref = _zero_columns(m, consumers, pick)
    n_before = sum(p.numel() for p in m.parameters())
    shrink(m, G, _remove(G, groups, ids), example_inputs=x)
    assert m.stem.out_channels == 5 and m.block1.bn2.num_features == 5 and m.block1.bn2.running_mean.shape == (5,)
    assert m.block2.short[0].in_channels == 5 and m.block2.short[1].num_features == 12 and m.fc.in_features == 12
    assert sum(p.numel() for p in m.parameters()) < n_before
    torch.testing.assert_close(m(x), ref(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["depthwise", "concat", "lenet5", "tied", "conv1d", "transformer"])
def test_shrink_equals_the_masked_model_across_families(name):
    m, x, G = _export(name)
    groups = node_groups(G)
    ids = [g.id for g in groups if g.prunable and g.kind != "width"][::2]
    keep = _remove(G, groups, ids)
    ref = copy.deepcopy(m)
    params = dict(ref.named_parameters())
    with torch.no_grad():  # zero the columns of every weight fed by a removed node (the layer's own indexing)
        for b in G.weight_blocks:
            gone = np.flatnonzero(~keep[b.src])
            if gone.size == 0:
                continue
            W = params[b.param]
            if b.layout == "embedding":
                W[gone, :] = 0
            elif b.layout == "conv" and b.groups > 1:
                continue  # grouped: whole groups go, their outputs are removed too
            else:
                W[:, gone] = 0
    shrink(m, G, keep, example_inputs=x)
    assert sum(p.numel() for p in m.parameters()) < sum(p.numel() for p in ref.parameters())
    torch.testing.assert_close(m(x), ref(x), rtol=1e-5, atol=1e-5)


def test_shrink_depthwise_keeps_groups_equal_to_channels():
    m, x, G = _export("depthwise")
    groups = node_groups(G)
    ids = [g.id for g in groups if g.prunable and "dw" in g.nodes][:3]
    ids += [g.id for g in groups if g.prunable and "grouped" in g.nodes][:1]
    shrink(m, G, _remove(G, groups, ids), example_inputs=x)
    assert (m.dw.in_channels, m.dw.out_channels, m.dw.groups) == (5, 5, 5)
    assert (m.grouped.in_channels, m.grouped.out_channels, m.grouped.groups) == (12, 6, 3)


def test_packed_attention_refuses_its_width_and_a_layer_norm_width_shrinks_on_request():
    _, _, G = _export("transformer")
    assert not any(g.prunable for g in node_groups(G) if g.kind == "width")  # nn.MultiheadAttention's embed_dim
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.ReLU(), nn.Linear(16, 3)).eval()
    x = torch.randn(2, 6)
    G = graphprune.from_model(m, x)
    groups = node_groups(G)
    width = [g.id for g in groups if g.kind == "width"]
    assert len(width) == 16 and all(g.kind == "width" for g in groups if g.prunable)
    with pytest.raises(MaskError, match="allow_width=True"):
        shrink(m, G, _remove(G, groups, width[:4]), allow_width=False)
    shrink(m, G, _remove(G, groups, width[:4]), example_inputs=x)
    assert m[1].weight.shape == (12,) and m[1].bias.shape == (12,) and m[1].normalized_shape == (12,)
    assert (m[0].out_features, m[3].in_features) == (12, 12) and m(x).shape == (2, 3)


# -- a tiny Llama: query heads within their key/value group, MLP neurons, the config ---------------------------------
def _llama():
    T = pytest.importorskip("transformers")
    T.logging.set_verbosity_error()
    c = T.LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=32)
    torch.manual_seed(0)
    m = T.LlamaForCausalLM(c).eval()
    ids = torch.randint(0, 97, (1, 8), generator=torch.Generator().manual_seed(1))
    return T, m, {"input_ids": ids}, graphprune.from_model(m, {"input_ids": ids})


def test_llama_groups_heads_within_key_value_groups():
    _, m, _, G = _llama()
    groups = node_groups(G)
    for layer in range(2):
        attn = f"model.layers.{layer}.self_attn"
        heads = [g for g in groups if g.kind == "head" and f"{attn}.q_proj" in g.nodes]
        kv = [g for g in groups if g.kind == "kv_group" and f"{attn}.k_proj" in g.nodes]
        assert [g.nodes[f"{attn}.q_proj"].tolist() for g in heads] == [list(range(8 * h, 8 * h + 8)) for h in range(4)]
        # repeat_kv: key/value head j serves query heads 2j and 2j + 1
        assert [[groups[c].nodes[f"{attn}.q_proj"][0] // 8 for c in g.children] for g in kv] == [[0, 1], [2, 3]]
        assert [g.nodes[f"{attn}.v_proj"].tolist() for g in kv] == [list(range(8)), list(range(8, 16))]
        up = f"model.layers.{layer}.mlp.up_proj"
        mlp = [g for g in groups if g.kind == "neuron" and g.prunable and up in g.nodes]
        assert len(mlp) == 48 and all(f"model.layers.{layer}.mlp.gate_proj" in g.nodes for g in mlp)
    assert sum(g.kind == "width" for g in groups) == 32


def test_llama_shrink_equals_the_masked_model_and_round_trips():
    T, m, inputs, G = _llama()
    groups = node_groups(G)
    drop_heads = {0: [0, 3], 1: [1, 2]}  # one query head in each key/value group
    drop_neurons = {0: list(range(0, 48, 3)), 1: list(range(1, 48, 3))}
    ids = []
    for layer in range(2):
        q = f"model.layers.{layer}.self_attn.q_proj"
        up = f"model.layers.{layer}.mlp.up_proj"
        ids += [g.id for g in groups if g.kind == "head" and q in g.nodes and g.nodes[q][0] // 8 in drop_heads[layer]]
        ids += [g.id for g in groups if g.prunable and up in g.nodes and g.nodes[up][0] in drop_neurons[layer]]
    ref = copy.deepcopy(m)
    with torch.no_grad():
        for layer in range(2):
            lay = ref.model.layers[layer]
            for h in drop_heads[layer]:
                lay.self_attn.o_proj.weight[:, 8 * h : 8 * h + 8] = 0
            lay.mlp.down_proj.weight[:, drop_neurons[layer]] = 0
    shrink(m, G, _remove(G, groups, ids), example_inputs=inputs)
    att = m.model.layers[0].self_attn
    assert (att.q_proj.out_features, att.k_proj.out_features, att.o_proj.in_features) == (16, 16, 16)
    assert att.num_key_value_groups == 1 and m.model.layers[1].mlp.up_proj.out_features == 32
    assert (m.config.num_attention_heads, m.config.num_key_value_heads, m.config.head_dim,
            m.config.intermediate_size, m.config.hidden_size) == (2, 2, 8, 32, 32)
    with torch.no_grad():
        out, want = m(**inputs).logits, ref(**inputs).logits
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)
    with tempfile.TemporaryDirectory() as d:
        m.save_pretrained(d)
        again = T.LlamaForCausalLM.from_pretrained(d).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(**inputs).logits, out)


def test_llama_removes_whole_key_value_groups():
    _, m, inputs, G = _llama()
    groups = node_groups(G)
    kv = [g for g in groups if g.kind == "kv_group" and "model.layers.0.self_attn.k_proj" in g.nodes
          or g.kind == "kv_group" and "model.layers.1.self_attn.k_proj" in g.nodes]
    ids = [kv[0].id, kv[3].id]  # group 0 of layer 0, group 1 of layer 1, each with its two query heads
    ref = copy.deepcopy(m)
    with torch.no_grad():
        ref.model.layers[0].self_attn.o_proj.weight[:, 0:16] = 0
        ref.model.layers[1].self_attn.o_proj.weight[:, 16:32] = 0
    shrink(m, G, _remove(G, groups, ids), example_inputs=inputs)
    assert m.model.layers[0].self_attn.k_proj.out_features == 8 and m.config.num_key_value_heads == 1
    with torch.no_grad():
        torch.testing.assert_close(m(**inputs).logits, ref(**inputs).logits, rtol=1e-5, atol=1e-5)


# -- errors: the model is untouched ----------------------------------------------------------------------------------
def _state(m):
    return {k: v.clone() for k, v in m.state_dict().items()}


def _same(m, state):
    now = m.state_dict()
    return now.keys() == state.keys() and all(torch.equal(now[k], state[k]) for k in state)


def test_llama_uneven_heads_and_orphan_key_value_groups_are_refused():
    _, m, inputs, G = _llama()
    groups = node_groups(G)
    kv = [g for g in groups if g.kind == "kv_group"]
    state = _state(m)
    with pytest.raises(MaskError, match="as many query heads"):
        shrink(m, G, _remove(G, groups, [kv[0].children[0]]))
    keep = _remove(G, groups, kv[0].children)
    with pytest.raises(MaskError, match="remove it too"):
        shrink(m, G, keep)
    with pytest.raises(MaskError, match="keeps some of its query heads"):
        keep = _remove(G, groups, [kv[0].id])
        for part, idx in groups[kv[0].children[0]].nodes.items():
            keep[part][idx] = True
        shrink(m, G, keep)
    assert _same(m, state)


def test_llama_per_layer_counts_that_a_config_cannot_hold_are_refused():
    _, m, inputs, G = _llama()
    groups = node_groups(G)
    up0 = [g.id for g in groups if g.prunable and "model.layers.0.mlp.up_proj" in g.nodes][:5]
    state = _state(m)
    with pytest.raises(ParameterError, match="intermediate_size.*hf_config='ignore'"):
        shrink(m, G, _remove(G, groups, up0))
    assert _same(m, state) and m.config.intermediate_size == 48
    shrink(m, G, _remove(G, groups, up0), hf_config="ignore", example_inputs=inputs)
    assert m.model.layers[0].mlp.up_proj.out_features == 43 and m.config.intermediate_size == 48


def test_split_group_and_unprunable_group_are_refused():
    m, x, G = _export("small_resnet")
    groups = node_groups(G)
    state = _state(m)
    g = next(g for g in groups if g.prunable and "add" in g.nodes)
    keep = {p.name: np.ones(p.size, dtype=bool) for p in G.partitions}
    keep["stem"][g.nodes["stem"]] = False  # the stem channel without its add
    with pytest.raises(MaskError, match="coupled channel group"):
        shrink(m, G, keep)
    out = next(g for g in groups if not g.prunable)
    with pytest.raises(MaskError, match="cannot be removed.*reaches the model's"):
        shrink(m, G, _remove(G, groups, [out.id]))
    with pytest.raises(MaskError, match="bool array of shape"):
        shrink(m, G, {"stem": np.ones(3, dtype=bool)})
    with pytest.raises(MaskError, match="not a partition"):
        shrink(m, G, {"nope": np.ones(3, dtype=bool)})
    with pytest.raises(ParameterError, match="'hf_config' parameter of shrink"):
        shrink(m, G, keep, hf_config="maybe")
    assert _same(m, state)


def test_a_forward_with_a_hard_coded_size_is_undone():
    class Fixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 6), nn.Linear(6, 2)

        def forward(self, x):
            h = self.a(x)
            return self.b(h[:, :6].reshape(-1, 6))

    m = Fixed().eval()
    x = torch.randn(2, 4)
    G = graphprune.from_model(m, x)
    groups = node_groups(G)
    state = _state(m)
    ids = [g.id for g in groups if g.prunable][:2]
    with pytest.raises(ShrinkError, match="hard-codes a size"):
        shrink(m, G, _remove(G, groups, ids), example_inputs=x)
    assert _same(m, state) and m.a.out_features == 6
    torch.testing.assert_close(m(x), Fixed.forward(m, x))


def test_torch_prune_reparametrisation_and_foreign_graphs_are_refused():
    m, x, G = _export("mlp")
    graphprune.apply_masks(m, G, graphprune.sparsify(G, "random", sparsity=0.5, seed=0))
    with pytest.raises(ShrinkError, match="make_permanent"):
        shrink(m, G, {})
    H = graphprune.MultipartiteGraph(G.partitions, G.blocks)
    with pytest.raises(ParameterError, match="not made by graphprune.from_model"):
        shrink(nn.Linear(2, 2), H, {})


# -- node scores and the selection -----------------------------------------------------------------------------------
from graphprune.structured import kept_weights, node_scores, select_nodes  # noqa: E402


def test_leverage_score_matches_a_pinv_reference():
    m, x, G = _export("mlp")  # 20 -> 16 -> 12 -> 5
    groups = node_groups(G)
    W = [m[0].weight.detach().double().numpy(), m[2].weight.detach().double().numpy(),
         m[4].weight.detach().double().numpy()]

    def node_lev(w):  # block Laplacian of the bipartite graph with weights |w|, R_e by the pseudo-inverse
        out, inp = w.shape
        A = np.zeros((inp + out, inp + out))
        A[:inp, inp:] = np.abs(w).T
        A = A + A.T
        L = np.diag(A.sum(1)) - A
        P = np.linalg.pinv(L)
        lev = np.zeros_like(w)
        for o in range(out):
            for i in range(inp):
                R = P[i, i] + P[inp + o, inp + o] - 2 * P[i, inp + o]
                lev[o, i] = abs(w[o, i]) * R
        lev /= lev.sum()
        return lev.sum(0), lev.sum(1)  # per input node, per output node

    src1, dst0 = node_lev(W[1])[0], node_lev(W[0])[1]
    src2, dst1 = node_lev(W[2])[0], node_lev(W[1])[1]
    s = node_scores(G, "leverage", groups=groups)
    for g in groups:
        if g.prunable and g.layer == "0":
            i = g.nodes["0"][0]
            assert s[g.id] == pytest.approx(dst0[i] + src1[i], rel=1e-6)
        elif g.prunable and g.layer == "2":
            i = g.nodes["2"][0]
            assert s[g.id] == pytest.approx(dst1[i] + src2[i], rel=1e-6)


def test_l2_score_is_the_mean_row_and_column_norm_over_the_layer_mean():
    m, x, G = _export("mlp")
    groups = node_groups(G)
    w0, w2 = m[0].weight.detach().double(), m[2].weight.detach().double()
    raw = ((w0 ** 2).sum(1) + (w2 ** 2).sum(0)) / 2  # neuron i of layer '0': its row in, its column out
    want = (raw / raw.mean()).numpy()
    s = node_scores(G, "l2", groups=groups)
    got = np.array([s[g.id] for g in groups if g.prunable and g.layer == "0"])
    idx = [g.nodes["0"][0] for g in groups if g.prunable and g.layer == "0"]
    np.testing.assert_allclose(got, want[idx], rtol=1e-9)


def test_random_scores_follow_the_seed_and_select_the_lowest():
    _, _, G = _export("mlp")
    a, b, c = (node_scores(G, "random", seed=s) for s in (0, 0, 1))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    groups = node_groups(G)
    keep = select_nodes(G, 0.25, scores=a, groups=groups)
    layer0 = [g for g in groups if g.prunable and g.layer == "0"]
    gone = sorted(layer0, key=lambda g: a[g.id])[:4]  # round(0.25 * 16) = 4 lowest
    assert sorted(np.flatnonzero(~keep["0"]).tolist()) == sorted(int(g.nodes["0"][0]) for g in gone)
    assert int((~keep["2"]).sum()) == 3


def test_select_round_to_global_and_kept_weights():
    m, x, G = _export("small_resnet")
    keep = select_nodes(G, 0.3, criterion="l1", round_to=4)
    assert {p: int(v.sum()) for p, v in keep.items() if p in ("stem", "block1.conv1", "block2.conv1")} == \
        {"stem": 4, "block1.conv1": 4, "block2.conv1": 8}  # 8 - 2 = 6 -> 4, 16 - 5 = 11 -> 8 (rounded down)
    glob = select_nodes(G, 0.9, criterion="l1", allocation="global")
    assert all(int(glob[p].sum()) >= 1 for p in ("stem", "block1.conv1", "block2.conv1", "block2.conv2"))
    shrink(m, G, keep, example_inputs=x)
    weights = sum(p.numel() for n, p in m.named_parameters() if p.dim() >= 2)
    assert kept_weights(G, keep) == weights


def test_select_removes_query_heads_evenly_and_not_the_width_by_default():
    _, m, inputs, G = _llama()
    groups = node_groups(G)
    keep = select_nodes(G, 0.5, criterion="l2", groups=groups)
    assert all(keep[p].all() for p in keep if p.startswith("add") or p == "model.embed_tokens")
    for layer in range(2):
        q = keep[f"model.layers.{layer}.self_attn.q_proj"].reshape(4, 8)
        assert q.all(1).sum() == 2 and (q.all(1) | ~q.any(1)).all()
        assert q[:2].all(1).sum() == 1 and q[2:].all(1).sum() == 1  # one head kept in each key/value group
        assert int(keep[f"model.layers.{layer}.mlp.up_proj"].sum()) == 24
    shrink(m, G, keep, example_inputs=inputs)
    assert m.config.num_attention_heads == 2 and m.config.intermediate_size == 24


def test_select_refuses_bad_arguments():
    _, _, G = _export("mlp")
    with pytest.raises(ParameterError, match="'amount' parameter of select_nodes"):
        select_nodes(G, 1.0)
    with pytest.raises(ParameterError, match="'criterion' parameter of node_scores"):
        select_nodes(G, 0.5, criterion="taylor")
    with pytest.raises(ParameterError, match="'allocation' parameter of select_nodes"):
        select_nodes(G, 0.5, allocation="erk")
    with pytest.raises(ParameterError, match="'round_to' parameter of select_nodes"):
        select_nodes(G, 0.5, round_to=0)
    with pytest.raises(ParameterError, match="'kinds' parameter of select_nodes"):
        select_nodes(G, 0.5, kinds="neuron")
    with pytest.raises(ParameterError, match="one score per group"):
        select_nodes(G, 0.5, scores=np.zeros(3))


# -- couplings the export follows for structured pruning ------------------------------------------------------------
class _ScaledConv(nn.Module):
    """A ConvNeXt-style layer scale: a per-channel parameter reshaped for broadcasting, then a residual add."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 1)
        self.gamma = nn.Parameter(torch.linspace(0.5, 2.0, 8))
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        h = self.a(x)
        h = h + self.b(torch.relu(h)) * self.gamma.reshape(1, -1, 1, 1)
        return self.head(h.mean((2, 3)))


def test_a_reshaped_per_channel_parameter_is_sliced_with_its_channels():
    torch.manual_seed(0)
    m, x = _ScaledConv().eval(), torch.randn(2, 3, 6, 6)
    G = graphprune.from_model(m, x)
    groups = node_groups(G)
    ok = [g for g in groups if g.prunable]
    assert len(ok) == 8 and all(set(g.nodes) == {"a", "b", "add"} for g in ok)  # the add ties a and b
    drop = [1, 5, 6]
    ref = copy.deepcopy(m)
    with torch.no_grad():
        ref.b.weight[:, drop] = 0
        ref.head.weight[:, drop] = 0
    shrink(m, G, _remove(G, groups, [g.id for g in ok if g.nodes["a"][0] in drop]), example_inputs=x)
    kept = [c for c in range(8) if c not in drop]
    torch.testing.assert_close(m.gamma.detach(), torch.linspace(0.5, 2.0, 8)[kept])
    torch.testing.assert_close(m(x), ref(x), rtol=1e-5, atol=1e-6)


def test_per_head_tensors_the_export_does_not_follow_refuse_head_removal():
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    m = tv.models.SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[2, 4],
                                  window_size=[4, 4], num_classes=10).eval()
    x = torch.randn(1, 3, 32, 32)
    G = graphprune.from_model(m, x)
    groups = node_groups(G)
    state = _state(m)
    heads = [g.id for g in groups if g.kind == "head" and g.prunable][:1]
    with pytest.raises(ShrinkError, match="relative_position_bias_table.*head count"):
        shrink(m, G, _remove(G, groups, heads))
    assert _same(m, state)
    keep = select_nodes(G, 0.3, criterion="l1", kinds=("neuron", "channel"), groups=groups)
    shrink(m, G, keep, example_inputs=x)  # its MLP neurons shrink
    assert m(x).shape == (1, 10)


def test_a_config_that_derives_head_dim_refuses_head_removal():
    T = pytest.importorskip("transformers")
    T.logging.set_verbosity_error()
    torch.manual_seed(0)
    m = T.GPT2LMHeadModel(T.GPT2Config(vocab_size=97, n_positions=16, n_embd=32, n_layer=2, n_head=4)).eval()
    ids = {"input_ids": torch.randint(0, 97, (1, 8), generator=torch.Generator().manual_seed(0))}
    G = graphprune.from_model(m, ids)
    groups = node_groups(G)
    keep = select_nodes(G, 0.5, criterion="l2", groups=groups, kinds=("head",))
    with pytest.raises(ParameterError, match="GPT2Config has no head_dim"):
        shrink(m, G, keep)
    ref = copy.deepcopy(m)
    with torch.no_grad():
        for layer in range(2):
            gone = np.flatnonzero(~keep[f"transformer.h.{layer}.attn.c_attn"][:32])  # the query channels
            ref.transformer.h[layer].attn.c_proj.weight[gone, :] = 0  # Conv1D stores (in, out)
    shrink(m, G, keep, hf_config="ignore", example_inputs=ids)
    assert m.transformer.h[0].attn.num_heads == 2 and m.transformer.h[0].attn.split_size == 16
    with torch.no_grad():
        torch.testing.assert_close(m(**ids).logits, ref(**ids).logits, rtol=1e-5, atol=1e-5)


def test_prune_structured_shrinks_in_one_call():
    m, x, _ = _export("small_resnet")
    keep = graphprune.prune(m, x, "l1", sparsity=0.5, structured=True, round_to=2)
    assert m.block2.conv1.out_channels == 8 and int(keep["block2.conv1"].sum()) == 8
    assert m(x).shape == (2, 10)
    with pytest.raises(ParameterError, match="Unknown option 'keep_dense'"):
        graphprune.prune(m, x, sparsity=0.5, structured=True, keep_dense=["fc"])
    with pytest.raises(ParameterError, match="exactly one of 'sparsity'"):
        graphprune.prune(m, x, structured=True)


def test_export_tracer_batch_norm_running_statistics_are_sliced():
    m, x = build("small_resnet")
    m.eval()
    G = graphprune.from_model(m, x, tracer="export")  # batch norm as an ATen op: its tensors read dim 1
    groups = node_groups(G)
    layer = _by_layer(groups)["block1.conv1"]
    drop = [g.nodes["block1.conv1"][0] for g in layer[:3]]
    ref = _zero_columns(m, {"block1.conv1": ["block1.conv2.weight"]}, {"block1.conv1": drop})
    mean = m.block1.bn1.running_mean.clone()
    shrink(m, G, _remove(G, groups, [g.id for g in layer[:3]]), example_inputs=x)
    kept = [c for c in range(8) if c not in drop]
    assert m.block1.bn1.num_features == 5 and torch.equal(m.block1.bn1.running_mean, mean[kept])
    torch.testing.assert_close(m(x), ref(x), rtol=1e-5, atol=1e-5)


def test_grouped_transposed_convolution_loses_whole_groups():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.t = nn.Conv2d(3, 8, 3), nn.ConvTranspose2d(8, 6, 3, stride=2)
            self.g, self.c = nn.ConvTranspose2d(6, 4, 3, groups=2), nn.Conv2d(4, 2, 1)

        def forward(self, x):
            return self.c(torch.relu(self.g(torch.relu(self.t(torch.relu(self.a(x)))))))

    torch.manual_seed(0)
    m, x = Net().eval(), torch.randn(2, 3, 8, 8)
    G = graphprune.from_model(m, x)
    groups = node_groups(G)
    pair = [g for g in groups if g.prunable and "g" in g.nodes]
    assert [_sig(g) for g in pair] == [{"t": [0, 1, 2], "g": [0, 1]}, {"t": [3, 4, 5], "g": [2, 3]}]
    ref = copy.deepcopy(m)
    with torch.no_grad():
        ref.c.weight[:, 2:4] = 0  # the second group's outputs feed nothing
    shrink(m, G, _remove(G, groups, [pair[1].id]), example_inputs=x)
    assert (m.g.in_channels, m.g.out_channels, m.g.groups, m.t.out_channels) == (3, 2, 1, 3)
    torch.testing.assert_close(m(x), ref(x), rtol=1e-5, atol=1e-6)


def test_llama_hidden_width_on_request_resizes_every_norm_and_round_trips():
    T, m, inputs, G = _llama()
    keep = select_nodes(G, 0.25, criterion="l2", kinds=("width",))
    assert int(keep["model.embed_tokens"].sum()) == 24 and keep["model.layers.0.mlp.up_proj"].all()
    shrink(m, G, keep, example_inputs=inputs)
    assert m.model.embed_tokens.embedding_dim == 24 and m.model.norm.weight.shape == (24,)
    assert m.model.layers[1].post_attention_layernorm.weight.shape == (24,) and m.lm_head.in_features == 24
    assert (m.config.hidden_size, m.config.head_dim) == (24, 8)
    with tempfile.TemporaryDirectory() as d:
        m.save_pretrained(d)
        again = T.LlamaForCausalLM.from_pretrained(d).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(**inputs).logits, m(**inputs).logits)
