"""Export errors name the real cause; the op-rule registry; the graph checks a parameter's elements exactly."""

import numpy as np
import pytest
import torch
from torch import nn

import graphprune
from graphprune.errors import GraphValidationError, ParameterError, TracingError, UnsupportedOperationError
from graphprune.export import OP_RULES, register_op_rule
from graphprune.graph import Block, MultipartiteGraph, Partition


def _mlp():
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))


@pytest.mark.parametrize("x, cause", [(torch.randn(1, 5), "mat1 and mat2 shapes cannot be multiplied"),
                                      (torch.randn(1, 4).double(), "must have the same dtype")])
def test_bad_example_inputs_give_torch_message_first_and_nothing_on_stderr(x, cause, capfd):
    with pytest.raises(TracingError) as info:
        graphprune.from_model(_mlp(), x)
    msg = str(info.value)
    assert msg.startswith("RuntimeError: ") and cause in msg.splitlines()[0]
    assert "module '0' (Linear)" in msg and "example inputs" in msg
    assert "check the shapes" not in msg.lower()
    assert capfd.readouterr().err == ""  # no ShapeProp traceback printed


def test_meta_model_is_refused_with_the_fix():
    with torch.device("meta"):
        net = _mlp()
    with pytest.raises(ParameterError, match=r"meta device.*to_empty"):
        graphprune.from_model(net, torch.randn(1, 4))


def test_empty_and_weightless_models():
    with pytest.raises(ParameterError, match="has no parameters"):
        graphprune.from_model(nn.Sequential(), torch.randn(1, 4))
    with pytest.raises(TracingError, match="no weight the exporter turned into edges") as info:
        graphprune.from_model(nn.Sequential(nn.LayerNorm(4)), torch.randn(1, 4))
    assert "return the output tensors" not in str(info.value)


@pytest.mark.parametrize("kwargs, param", [(dict(leaf_modules=5), "leaf_modules"),
                                           (dict(leaf_modules=("bogus",)), "leaf_modules"),
                                           (dict(tracer="bogus"), "tracer"),
                                           (dict(validate="yes"), "validate")])
@pytest.mark.parametrize("root_adapter", [False, True])
def test_bad_options_name_the_parameter_and_allowed_values(kwargs, param, root_adapter):
    if root_adapter:  # the root has an adapter: checked all the same
        net = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, batch_first=True), 1,
                                    enable_nested_tensor=False)
        x = torch.randn(1, 3, 8)
    else:
        net, x = _mlp(), torch.randn(1, 4)
    with pytest.raises(ParameterError, match=f"'{param}' parameter of from_model") as info:
        graphprune.from_model(net, x, **kwargs)
    allowed = {"leaf_modules": "torch.nn.Module subclasses", "tracer": "'auto', 'fx', 'export'",
               "validate": "bool"}[param]
    assert allowed in str(info.value)


class _Cumsum(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 2)

    def forward(self, x):
        return self.b(torch.cumsum(self.a(x), dim=0))  # along the batch: channels kept


def test_op_with_no_rule_names_op_module_shapes_and_how_to_register():
    with pytest.raises(UnsupportedOperationError) as info:
        graphprune.from_model(_Cumsum(), torch.randn(3, 4))
    msg = str(info.value)
    assert "'cumsum'" in msg and "(3, 4)" in msg and "register_op_rule('cumsum')" in msg


def test_registered_op_rule_is_used():
    calls = []

    @register_op_rule("cumsum")
    def _cumsum(ctx, args, kwargs, shape):
        calls.append(ctx.op)
        return OP_RULES["relu"](ctx, args, kwargs, shape)  # keeps the channel dim: elementwise

    try:
        G = graphprune.from_model(_Cumsum(), torch.randn(3, 4))
    finally:
        del OP_RULES["cumsum"]
    assert calls == ["cumsum"]
    assert G.block("b").src == "a" and G.num_weight_edges == 16 + 8
    with pytest.raises(ParameterError, match="op names"):
        register_op_rule(5)


def test_an_op_whose_output_cannot_be_followed_is_an_error_not_a_none():
    class Picks(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.b(self.a(x).new_zeros(x.shape) + self.a(x)[:, [0, 1, 2, 3]])

    with pytest.raises(UnsupportedOperationError, match="channel dim"):
        graphprune.from_model(Picks(), torch.randn(1, 4))


def _graph(weight, **block):
    parts = [Partition("input", weight.shape[1], role="input"), Partition("out", weight.shape[0], role="output")]
    b = Block("fc", "input", "out", param="fc.weight", weight=weight, **block)
    return parts, b


def test_validate_checks_a_parameter_is_accounted_for_exactly():
    W = torch.randn(4, 4)
    parts, b = _graph(W)
    assert MultipartiteGraph(parts, [b]).validate() == []
    parts, b = _graph(W.t())  # an adapter transposing a square weight: masks would land on the wrong elements
    with pytest.raises(GraphValidationError, match="transposed view"):
        MultipartiteGraph(parts, [b], param_shapes={"fc.weight": (4, 4)}).validate()
    # rows 0:2 only of a (4, 4) parameter
    parts = [Partition("input", 4, role="input"), Partition("out", 2, role="output")]
    half = Block("fc", "input", "out", param="fc.weight", weight=W[:2], param_slice=(0, 2))
    with pytest.raises(GraphValidationError, match=r"not each of its 4 rows exactly once"):
        MultipartiteGraph(parts, [half], param_shapes={"fc.weight": (4, 4)}).validate()
    parts = [Partition("input", 4, role="input"), Partition("q", 2), Partition("k", 2, role="output")]
    q = Block("q", "input", "q", param="fc.weight", weight=W[:2], param_slice=(0, 2))
    k = Block("k", "input", "k", param="fc.weight", weight=W[2:], param_slice=(2, 4))
    G = MultipartiteGraph(parts, [q, k], param_shapes={"fc.weight": (4, 4)})
    assert G.validate(allow_dangling=True) == []


def test_keyword_inputs_and_positional_tuple_agree():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 3), nn.Linear(5, 3)

        def forward(self, x, y=None):
            return self.a(x) + self.b(y)

    x, y = torch.randn(1, 4), torch.randn(1, 5)
    net = Two()
    G1 = graphprune.from_model(net, (x, y))
    G2 = graphprune.from_model(net, {"x": x, "y": y})
    assert [p.size for p in G1.partitions] == [p.size for p in G2.partitions]
    assert np.allclose(G1.adjacency().toarray(), G2.adjacency().toarray())


def _reach(G, src, dst):
    """Boolean (n_dst, n_src) matrix: which nodes of partition ``src`` reach which of ``dst`` through identity
    blocks only (a hand-rolled path composition, independent of the exporter)."""
    sizes = {p.name: p.size for p in G.partitions}
    reach = {src: np.eye(sizes[src], dtype=bool)}
    for p in G.partitions:  # partitions are in topological order
        for b in G.blocks:
            if b.kind == "identity" and b.dst == p.name and b.src in reach:
                M = np.zeros((sizes[p.name], sizes[b.src]), dtype=bool)
                s, d = b.edge_index()
                M[d, s] = True
                acc = (M.astype(int) @ reach[b.src].astype(int)) > 0
                reach[p.name] = reach.get(p.name, np.zeros_like(acc)) | acc
    return reach.get(dst, np.zeros((sizes[dst], sizes[src]), dtype=bool))


class _SpaceToChannel(nn.Module):
    """Swin-style patch merging written as views: (B, C, H, W) -> (B, H/2, W/2, 4C) -> Linear."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 1)
        self.b = nn.Linear(16, 5)

    def forward(self, x):
        y = self.a(x).permute(0, 2, 3, 1)  # B, H, W, C
        B, H, W, C = y.shape
        y = y.reshape(B, H // 2, 2, W // 2, 2, C).permute(0, 1, 3, 4, 2, 5).reshape(B, H // 2, W // 2, 4 * C)
        return self.b(y)


def test_space_to_channel_view_matches_autograd():
    torch.manual_seed(0)
    net, x = _SpaceToChannel(), torch.randn(1, 3, 4, 4)
    G = graphprune.from_model(net, x)
    merged = G.block("b").src
    assert G.partition(merged).size == 16
    got = _reach(G, "a", merged)
    acts = {}

    def keep_a(module, inputs, out):
        out.retain_grad()
        acts["a"] = out

    def keep_b(module, inputs):
        acts["b"] = inputs[0]

    net.a.register_forward_hook(keep_a)
    net.b.register_forward_pre_hook(keep_b)
    net(x)
    want = np.zeros((16, 4), dtype=bool)
    for j in range(16):
        acts["a"].grad = None
        acts["b"][..., j].sum().backward(retain_graph=True)
        want[j] = (acts["a"].grad.abs().sum(dim=(0, 2, 3)) > 0).numpy()
    assert np.array_equal(got, want)
    assert want.sum(axis=1).tolist() == [1] * 16  # each merged node copies one channel


class _RMSNormNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 6), nn.Linear(6, 2)
        self.w = nn.Parameter(torch.ones(6))

    def forward(self, x):
        h = self.a(x)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6) * self.w
        return self.b(h)


@pytest.mark.parametrize("tracer", ["fx", "export"])
def test_a_statistic_over_channels_passes_nodes_through(tracer):
    G = graphprune.from_model(_RMSNormNet(), torch.randn(1, 3, 4), tracer=tracer)
    assert G.block("b").src == "a" and G.params == ["a.weight", "b.weight"]


class _TokenMixer(nn.Module):
    def __init__(self, T=5, C=4):
        super().__init__()
        self.a, self.tok, self.b = nn.Linear(C, C), nn.Linear(T, 3), nn.Linear(C, 2)

    def forward(self, x):  # x: (B, T, C)
        return self.b(self.tok(self.a(x).transpose(1, 2)).transpose(1, 2))


@pytest.mark.parametrize("tracer", ["fx", "export"])
def test_linear_along_tokens_is_a_block_between_token_partitions(tracer):
    G = graphprune.from_model(_TokenMixer(), torch.randn(1, 5, 4), tracer=tracer)
    (tok,) = G.blocks_of("tok.weight")
    assert (G.partition(tok.src).kind, G.partition(tok.src).size) == ("token", 5)
    assert (G.partition(tok.dst).kind, G.partition(tok.dst).size) == ("token", 3)
    out = G.block("b").src
    assert G.partition(out).size == 4
    straight = [b for b in G.blocks if b.src == "a" and b.dst == out]
    assert len(straight) == 1 and set(zip(*map(list, straight[0].edge_index()))) == {(c, c) for c in range(4)}
    assert G.num_weight_edges == 16 + 15 + 8 and G.validate() == []


def test_a_misspelled_option_is_not_passed_to_the_model():
    with pytest.raises(ParameterError, match=r"keyword 'skip_unsuported'.*options? of from_model.*\(input\)"):
        graphprune.from_model(_mlp(), torch.randn(1, 4), skip_unsuported=True)
    with pytest.raises(ParameterError, match=r"keyword 'inputs'"):
        graphprune.from_model(_mlp(), {"inputs": torch.randn(1, 4)})


class _IndexedQKV(nn.Module):
    """Packed qkv picked by indexing (older timm): ``q, k, v = qkv[0], qkv[1], qkv[2]``."""

    def __init__(self, E=8, H=2):
        super().__init__()
        self.qkv, self.proj, self.H = nn.Linear(E, 3 * E), nn.Linear(E, E), H

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.H, C // self.H).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        att = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((att @ v).transpose(1, 2).reshape(B, N, C))


@pytest.mark.parametrize("tracer", ["fx", "export"])
def test_indexed_packed_qkv(tracer):
    G = graphprune.from_model(_IndexedQKV(), torch.randn(1, 5, 8), tracer=tracer)
    attn = G.block("proj").src
    into = {(b.edge_kind, tuple(sorted(set(b.edge_index()[0].tolist())))) for b in G.blocks if b.dst == attn}
    # by hand: q is rows 0-7 of qkv, k rows 8-15 (score edges), v rows 16-23 (feature edges), channel c of head c // 4
    assert into == {("score", tuple(range(8))), ("score", tuple(range(8, 16))), ("feature", tuple(range(16, 24)))}


class _ViewedScores(nn.Module):
    """Attention whose scores are reshaped between q k^T and the softmax: ``"windows"`` splits the batch into
    (batch, windows) to add a per-window mask and merges it back (Swin's shifted windows); ``"flat"`` merges the
    query and key dims, which no score encoding follows."""

    def __init__(self, how, E=8, H=2, W=2):
        super().__init__()
        self.qkv, self.proj, self.H, self.W, self.how = nn.Linear(E, 3 * E), nn.Linear(E, E), H, W, how
        self.register_buffer("mask", torch.zeros(W, 1, 3, 3))

    def forward(self, x):  # x: (B * W, N, C), N = 3 tokens per window
        BW, N, C = x.shape
        q, k, v = self.qkv(x).reshape(BW, N, 3, self.H, C // self.H).permute(2, 0, 3, 1, 4).unbind(0)
        att = q @ k.transpose(-2, -1)  # (B * W, H, N, N)
        if self.how == "windows":
            att = att.view(-1, self.W, self.H, N, N) + self.mask.unsqueeze(0)
            att = att.view(-1, self.H, N, N)
        else:
            att = att.reshape(BW, self.H, N * N).reshape(BW, self.H, N, N)
        return self.proj((att.softmax(-1) @ v).transpose(1, 2).reshape(BW, N, C))


@pytest.mark.parametrize("tracer", ["fx", "export"])
def test_a_reshape_of_the_scores_leading_dims_keeps_their_edges(tracer):
    G = graphprune.from_model(_ViewedScores("windows"), torch.randn(4, 3, 8), tracer=tracer)
    attn = G.block("proj").src
    into = {(b.edge_kind, tuple(sorted(set(b.edge_index()[0].tolist())))) for b in G.blocks if b.dst == attn}
    # by hand, as without the reshape: q is rows 0-7 of qkv, k rows 8-15 (score edges), v rows 16-23
    assert into == {("score", tuple(range(8))), ("score", tuple(range(8, 16))), ("feature", tuple(range(16, 24)))}
    with pytest.raises(UnsupportedOperationError, match=r"turns attention scores of shape \(4, 2, 3, 3\) into "
                                                        r"\(4, 2, 9\)"):
        graphprune.from_model(_ViewedScores("flat"), torch.randn(4, 3, 8), tracer=tracer)


class _Shifts(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):  # x: (B, T, C)
        h = torch.roll(self.a(x), shifts=1, dims=1)  # along tokens: channels untouched
        return self.b(torch.roll(h, shifts=1, dims=-1).flip(-1))  # along channels: a reorder


@pytest.mark.parametrize("tracer", ["fx", "export"])
def test_roll_and_flip_reorder_only_along_the_channel_dim(tracer):
    torch.manual_seed(0)
    net, x = _Shifts(), torch.randn(1, 3, 4)
    G = graphprune.from_model(net, x, tracer=tracer)
    got = _reach(G, "a", G.block("b").src)
    want = np.zeros((4, 4), dtype=bool)  # by hand: roll by 1 then flip: output j holds channel (3 - j - 1) % 4
    for j in range(4):
        want[j, (3 - j - 1) % 4] = True
    assert np.array_equal(got, want)


class _Inner(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(x)


class _WithLeaf(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.inner, self.b = nn.Linear(4, 4), _Inner(), nn.Linear(4, 2)

    def forward(self, x):
        return self.b(self.inner(self.a(x)))


def test_skipped_module_weights_are_named_with_the_reason():
    with pytest.warns(UserWarning, match=r"'inner.fc.weight': its module 'inner' has no adapter and was skipped"):
        G = graphprune.from_model(_WithLeaf(), torch.randn(1, 4), leaf_modules=(_Inner,), skip_unsupported=True)
    assert list(G.left_out) == ["inner.fc.weight"] and "inner.fc.weight: its module" in G.summary()
    assert G.params == ["a.weight", "b.weight"]
