import copy
import itertools

import numpy as np
import pytest
import torch
from models import MODELS, TinyTransformer, build, weight_params
from torch import nn
from torch.nn.utils import prune

import graphprune
from graphprune.errors import ParameterError, TracingError, UnsupportedModuleError


@pytest.mark.parametrize("name", sorted(MODELS))
def test_weight_edges_equal_weight_numel(name):
    model, x = build(name)
    G = graphprune.from_model(model, x)
    expected = sum(p.numel() * uses for p, uses in weight_params(model).values())
    assert G.num_weight_edges == expected
    assert G.validate() == []
    # every partition size matches the blocks around it
    for b in G.blocks:
        assert b.n_src == G.partition(b.src).size and b.n_dst == G.partition(b.dst).size


def test_export_leaves_model_untouched():
    model, x = build("small_resnet")
    model.train()
    before = copy.deepcopy(model.state_dict())
    graphprune.from_model(model, x)
    assert model.training and all(m.training for m in model.modules())
    for k, v in model.state_dict().items():  # batch-norm running stats untouched
        assert torch.equal(v, before[k]), k


def test_mlp_partitions_and_blocks():
    model, x = build("mlp")
    G = graphprune.from_model(model, x)
    assert [(p.name, p.size, p.role) for p in G.partitions] == [
        ("input", 20, "input"), ("0", 20 - 4, "hidden"), ("2", 12, "hidden"), ("4", 5, "output")]
    assert [(b.src, b.dst, b.param) for b in G.blocks] == [
        ("input", "0", "0.weight"), ("0", "2", "2.weight"), ("2", "4", "4.weight")]


def test_lenet_flatten_feature_partition():
    model, x = build("lenet5")
    G = graphprune.from_model(model, x)
    feat = next(p for p in G.partitions if p.kind == "feature")
    assert (feat.size, feat.shape) == (400, (16, 5, 5))
    ident = next(b for b in G.blocks if b.dst == feat.name)
    assert ident.src == "conv2" and ident.kind == "identity"
    # channel c feeds features c*25 .. c*25+24, nothing else (hand derivation of C-order flatten)
    s, d = ident.edge_index()
    assert np.array_equal(s, np.repeat(np.arange(16), 25)) and np.array_equal(d, np.arange(400))
    assert G.block("fc1").src == feat.name


def test_resnet_residual_adds_follow_dataflow():
    model, x = build("small_resnet")
    G = graphprune.from_model(model, x)
    merges = [p for p in G.partitions if p.kind == "merge"]
    assert len(merges) == 2
    into = {p.name: sorted(b.src for b in G.blocks if b.dst == p.name) for p in merges}
    assert into["add"] == ["block1.conv2", "stem"]  # identity shortcut from the stem output
    assert into["add_1"] == ["block2.conv2", "block2.short.0"]
    assert G.block("block2.conv1").src == "add" and G.block("block2.short.0").src == "add"
    assert G.block("fc").src == "add_1"  # avgpool + flatten of a 1x1 map keeps the channel partition


def _naive_conv_edges(w, groups):
    out_c, in_g = w.shape[:2]
    K = int(np.prod(w.shape[2:]))
    src, dst = [], []
    for o, ci, _ in itertools.product(range(out_c), range(in_g), range(K)):
        src.append((o // (out_c // groups)) * in_g + ci)
        dst.append(o)
    return np.array(src), np.array(dst)


@pytest.mark.parametrize("block", ["stem", "dw", "pw", "grouped"])
def test_conv_edges_respect_groups(block):
    model, x = build("depthwise")
    G = graphprune.from_model(model, x)
    b = G.block(block)
    conv = getattr(model, block)
    s, d = b.edge_index()
    ns, nd = _naive_conv_edges(conv.weight, conv.groups)
    assert np.array_equal(s, ns) and np.array_equal(d, nd)
    assert b.kernel_size == int(np.prod(conv.kernel_size))
    # depthwise: channel o only sees channel o, with k*k parallel edges
    if block == "dw":
        assert np.array_equal(s, d) and np.all(np.bincount(s) == 9)


def test_conv_rolled_view_is_weight_reshape():
    model, x = build("lenet5")
    G = graphprune.from_model(model, x)
    b = G.block("conv2")
    B = G.biadjacency(b, view="rolled").toarray()
    assert np.allclose(B, model.conv2.weight.detach().abs().reshape(16, -1).double().numpy())
    C = G.biadjacency(b, view="channel").toarray()  # parallel edges summed
    assert np.allclose(C, model.conv2.weight.detach().abs().sum(dim=(2, 3)).double().numpy())
    Bt = G.biadjacency(b, view="rolled", format="torch")
    assert torch.allclose(Bt.double(), torch.from_numpy(B))


def test_conv_transpose_edges():
    model = nn.Sequential(nn.Conv2d(2, 4, 1), nn.ConvTranspose2d(4, 6, 2, stride=2, groups=2))
    G = graphprune.from_model(model, torch.randn(1, 2, 3, 3))
    b = G.block("1")
    s, d = b.edge_index()
    w = model[1].weight  # (in, out/groups, k, k)
    ref = [(i, (i // 2) * 3 + co) for i in range(4) for co in range(3) for _ in range(4)]
    assert list(zip(s.tolist(), d.tolist())) == ref
    assert G.num_weight_edges == 8 + w.numel()


def test_concat_offsets():
    model, x = build("concat")
    G = graphprune.from_model(model, x)
    a = G.block("cat<-a#0").edge_index()
    b = G.block("cat<-b#1").edge_index()
    assert a[1].tolist() == [0, 1, 2, 3] and b[1].tolist() == [4, 5, 6, 7, 8, 9]


def test_conv1d_net():
    model, x = build("conv1d")
    G = graphprune.from_model(model, x)
    assert [p.size for p in G.partitions] == [1, 8, 8, 80, 10]
    assert G.partition("flatten").shape == (8, 10)


def test_transformer_attention_blocks():
    model = TinyTransformer(d=16, heads=4, ff=32, layers=2)
    G = graphprune.from_model(model, torch.randn(2, 5, 6))
    name = "encoder.layers.0.self_attn.in_proj_weight"
    q, k, v = G.blocks_of(name)
    assert [b.param_slice for b in (q, k, v)] == [(0, 16), (16, 32), (32, 48)]
    assert all(b.weight.shape == (16, 16) for b in (q, k, v))
    scores = [b for b in G.blocks if b.edge_kind == "score"]
    assert len(scores) == 4  # q and k of two layers
    # query dim i reaches the 4 output dims of its own head
    s, d = scores[0].edge_index()
    assert sorted(d[s == 5].tolist()) == [4, 5, 6, 7]
    # no dead ends: every q and k node has an outgoing edge
    out_deg = G.degrees("out")
    for p in G.partitions:
        if p.name.endswith((".q", ".k")):
            off = G.node_offset(p.name)
            assert (out_deg[off : off + p.size] > 0).all()


def test_tied_parameters_share_one_mask():
    model, x = build("tied")
    G = graphprune.from_model(model, x)
    blocks = G.blocks_of("emb.weight")
    assert [b.layout for b in blocks] == ["embedding", "linear"]
    assert G.params == ["emb.weight", "mix.weight"]
    masks = graphprune.sparsify(G, "random", sparsity=0.5, seed=1)
    H = G.with_masks(masks)
    assert torch.equal(H.block_mask(blocks[0]), H.block_mask(blocks[1]))


def test_pruned_model_masks_become_initial_masks():
    model, x = build("lenet5")
    prune.random_unstructured(model.fc1, "weight", amount=0.3)
    G = graphprune.from_model(model, x)
    assert torch.equal(G.param_mask("fc1.weight"), model.fc1.weight_mask.bool())
    assert G.density(per_param=True)["fc1.weight"] == pytest.approx(0.7, abs=1e-3)
    assert G.density(per_param=True)["conv1.weight"] == 1.0


def test_functional_linear_with_parameter():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(3, 5))
            self.u = nn.Parameter(torch.randn(3, 4))

        def forward(self, x):
            return torch.nn.functional.linear(x, self.w) @ self.u

    G = graphprune.from_model(Functional(), torch.randn(2, 5))
    assert [b.layout for b in G.blocks] == ["linear", "embedding"]
    assert [p.size for p in G.partitions] == [5, 3, 4]


def test_unsupported_module_lists_every_one():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.rnn = nn.GRU(4, 4, batch_first=True)
            self.bil = nn.Bilinear(4, 4, 3)

        def forward(self, x):
            h = self.fc(x)
            y, _ = self.rnn(h.unsqueeze(1))
            y = y.squeeze(1)
            return self.bil(y, y)

    net, x = Net(), torch.randn(2, 4)
    with pytest.raises(UnsupportedModuleError, match=r"'rnn' \(GRU\).*'bil' \(Bilinear\)"):
        graphprune.from_model(net, x)
    with pytest.warns(UserWarning, match="rnn"):
        G = graphprune.from_model(net, x, skip_unsupported=True)
    assert G.num_weight_edges == 16


def test_bad_inputs():
    with pytest.raises(ParameterError, match="'model'"):
        graphprune.from_model("resnet", torch.randn(1))
    with pytest.raises(ParameterError, match="'example_inputs'"):
        graphprune.from_model(nn.Linear(2, 2), [1.0, 2.0])

    class Dynamic(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 2)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow
                return self.fc(x)
            return x

    with pytest.raises(TracingError, match="torch.fx could not trace Dynamic"):
        graphprune.from_model(Dynamic(), torch.randn(1, 2))


def test_torchvision_resnet18():
    tv = pytest.importorskip("torchvision")
    model = tv.models.resnet18()
    G = graphprune.from_model(model, torch.randn(1, 3, 64, 64))
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(G.weight_blocks) == len(convs) == 21
    assert G.num_weight_edges == sum(m.weight.numel() for m in convs)
    assert sum(p.kind == "merge" for p in G.partitions) == 8  # one residual add per BasicBlock
    assert G.partition("fc").role == "output" and G.partition("input").size == 3


def test_channel_slices_split_and_chunk():
    class Sliced(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = nn.Linear(4, 12)
            self.c = nn.Conv2d(3, 8, 1)
            self.a = nn.Conv2d(4, 2, 1)
            self.b = nn.Conv2d(5, 2, 1)

        def forward(self, x, img):
            h = self.qkv(x)
            d = x.shape[-1]  # a traced size: the slice bounds are resolved from the shape pass
            y = h[..., :d] + h[..., d : 2 * d] * h[:, 2 * d :]
            u, _ = self.c(img).chunk(2, dim=1)
            _, v = torch.split(self.c(img), [3, 5], dim=1)
            return y, self.a(u) + self.b(v)

    G = graphprune.from_model(Sliced(), (torch.randn(2, 4), torch.randn(2, 3, 5, 5)))
    qkv_out = [b for b in G.blocks if b.src == "qkv"]
    assert [b.edge_index()[0].tolist() for b in qkv_out] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    chunk = next(b for b in G.blocks if b.dst == "chunk.0")
    split = next(b for b in G.blocks if b.dst == "split.1")
    assert chunk.edge_index()[0].tolist() == [0, 1, 2, 3]
    assert split.edge_index()[0].tolist() == [3, 4, 5, 6, 7]
    assert G.block("b").src == "split.1" and G.block("a").src == "chunk.0"
    assert len(G.blocks_of("c.weight")) == 2  # the module is called twice: both uses are in the graph


@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_b0", "densenet121", "shufflenet_v2_x0_5"])
def test_torchvision_depthwise_and_dense_connectivity(name):
    tv = pytest.importorskip("torchvision")
    model = tv.models.get_model(name, weights=None)
    G = graphprune.from_model(model, torch.randn(1, 3, 64, 64))
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert G.num_weight_edges == sum(m.weight.numel() for m in layers)
    assert len(G.weight_blocks) == len(layers)
    assert G.validate() == []


def test_channel_shuffle_becomes_a_permutation():
    class Shuffle(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 6, 1)
            self.b = nn.Conv2d(6, 2, 1)

        def forward(self, x):
            y = self.a(x)
            n, c, h, w = y.shape
            return self.b(y.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w))

    net = Shuffle()
    G = graphprune.from_model(net, torch.randn(1, 3, 4, 4))
    perm = next(b for b in G.blocks if not b.is_weight)
    s, d = perm.edge_index()
    # by hand: after view (2 groups of 3) and transpose, output channel 2*i + g is input channel 3*g + i
    assert s.tolist() == [0, 3, 1, 4, 2, 5] and d.tolist() == list(range(6))
    # and numerically: the shuffled tensor's channel d equals the conv output's channel s
    y = net.a(torch.randn(1, 3, 4, 4))
    z = y.view(1, 2, 3, 4, 4).transpose(1, 2).reshape(1, 6, 4, 4)
    assert all(torch.equal(z[0, dd], y[0, ss]) for ss, dd in zip(s, d))
    assert G.block("b").src == perm.dst


def test_split_channels_feeding_a_layer_is_a_clear_error():
    class Bad(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 6)
            self.b = nn.Linear(3, 2)

        def forward(self, x):
            return self.b(self.a(x).view(-1, 2, 3))

    from graphprune.errors import UnsupportedOperationError

    with pytest.raises(UnsupportedOperationError, match="split over several"):
        graphprune.from_model(Bad(), torch.randn(1, 4))


class _HandAttention(nn.Module):
    """nanoGPT-style causal self-attention written out (or with scaled_dot_product_attention)."""

    def __init__(self, E=16, H=4, T=6, sdpa=False):
        super().__init__()
        self.c_attn = nn.Linear(E, 3 * E)
        self.c_proj = nn.Linear(E, E)
        self.E, self.H, self.sdpa = E, H, sdpa
        self.register_buffer("mask", torch.tril(torch.ones(T, T)).view(1, 1, T, T))

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.E, dim=2)
        q, k, v = (t.view(B, T, self.H, C // self.H).transpose(1, 2) for t in (q, k, v))
        if self.sdpa:
            y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / k.size(-1) ** 0.5)
            att = torch.softmax(att.masked_fill(self.mask == 0, float("-inf")), dim=-1)
            y = att @ v
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


@pytest.mark.parametrize("sdpa", [False, True])
def test_hand_written_attention_matches_autograd_dependencies(sdpa):
    torch.manual_seed(0)
    net = _HandAttention(sdpa=sdpa)
    x = torch.randn(1, 6, 16)
    G = graphprune.from_model(net, x)
    assert G.num_weight_edges == 48 * 16 + 16 * 16
    attn = G.block("c_proj").src
    # graph: which c_attn outputs feed attention output channel j (q, k, v slices are offsets 0, 16, 32)
    offset = {}
    for b in G.blocks:
        if b.dst != attn:
            continue
        src_part = b.src
        sl = next(x for x in G.blocks if x.dst == src_part)  # the split slice feeding it
        offset[src_part] = int(sl.edge_index()[0][0])
    want = {j: set() for j in range(16)}
    for b in G.blocks:
        if b.dst == attn:
            for s, d in zip(*b.edge_index()):
                want[int(d)].add(offset[b.src] + int(s))
    # autograd: which c_attn outputs the input of c_proj actually depends on
    acts = {}

    def keep_qkv(module, inputs, out):
        out.retain_grad()
        acts["qkv"] = out

    def keep_y(module, inputs):
        acts["y"] = inputs[0]

    net.c_attn.register_forward_hook(keep_qkv)
    net.c_proj.register_forward_pre_hook(keep_y)
    net(x)
    for j in range(16):
        acts["qkv"].grad = None
        acts["y"][..., j].sum().backward(retain_graph=True)
        got = set(torch.nonzero(acts["qkv"].grad.abs().sum(dim=(0, 1)) > 0).flatten().tolist())
        assert got == want[j], j
    assert sum(b.num_edges for b in G.blocks if b.edge_kind == "score") == 2 * 4 * 4 * 4


class _SlicedMaskAttention(_HandAttention):
    """Slices its causal-mask buffer by a traced size: torch.fx cannot trace this, torch.export can."""

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.E, dim=2)
        q, k, v = (t.view(B, T, self.H, C // self.H).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) * (1.0 / k.size(-1) ** 0.5)
        att = torch.softmax(att.masked_fill(self.mask[:, :, :T, :T] == 0, float("-inf")), dim=-1)
        return self.c_proj((att @ v).transpose(1, 2).contiguous().view(B, T, C))


def test_export_fallback_when_fx_cannot_trace():
    net = _SlicedMaskAttention()
    x = torch.randn(1, 6, 16)
    with pytest.raises(TracingError, match="torch.fx could not trace"):
        graphprune.from_model(net, x, tracer="fx")
    G = graphprune.from_model(net, x)  # auto: fx fails, torch.export takes over
    assert G.num_weight_edges == 48 * 16 + 16 * 16
    assert sum(b.num_edges for b in G.blocks if b.edge_kind == "score") == 2 * 4 * 4 * 4
    assert G.block("c_proj").param == "c_proj.weight" and G.partition("c_attn").size == 48


@pytest.mark.parametrize("name", ["mlp", "lenet5", "small_resnet", "depthwise", "conv1d", "tied", "concat"])
def test_export_path_matches_fx(name):
    model, x = build(name)
    model.train()
    before = copy.deepcopy(model.state_dict())
    a = graphprune.from_model(model, x, tracer="fx")
    b = graphprune.from_model(model, x, tracer="export")
    assert b.num_weight_edges == a.num_weight_edges
    assert sorted(b.params) == sorted(a.params)
    assert [p.size for p in b.partitions] == [p.size for p in a.partitions]
    assert np.allclose(b.adjacency().toarray(), a.adjacency().toarray())
    assert model.training and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_export_path_does_not_follow_multihead_attention():
    model, x = build("attention")
    from graphprune.errors import UnsupportedOperationError

    with pytest.raises((UnsupportedOperationError, TracingError)):
        graphprune.from_model(model, x, tracer="export")
    with pytest.raises(ParameterError, match="'tracer'"):
        graphprune.from_model(model, x, tracer="jit")


def test_attention_score_edges_are_held_as_a_product_not_as_index_arrays():
    """Score edges of a large head (2 heads of 256 channels: 2 x 256 x 256 = 131,072 edges per block, above the
    cache limit) are stored as per-head groups: reading the indices builds them (equal to a loop over heads, query
    channels and output channels, in that order) and keeps nothing per edge on the block."""
    from graphprune.layout import Grid

    E, H = 512, 2
    model = nn.MultiheadAttention(E, H, batch_first=True)
    G = graphprune.from_model(model, (torch.randn(1, 3, E),) * 3)
    score = [b for b in G.blocks if b.edge_kind == "score"]
    assert len(score) == 2
    hd = E // H
    want_s = [h * hd + i for h in range(H) for i in range(hd) for _ in range(hd)]
    want_d = [h * hd + j for h in range(H) for _ in range(hd) for j in range(hd)]
    for b in score:
        assert b.num_edges == H * hd * hd > Grid.EDGE_CACHE_LIMIT
        s, d = b.edge_index()
        assert s.tolist() == want_s and d.tolist() == want_d
        assert b.__dict__.get("_src_index") is None and b.__dict__.get("_dst_index") is None
        assert sum(a.nbytes for a in b.product) == 2 * E * 8  # O(heads x head size), not O(edges)
    assert G.validate() == []


def test_block_bias_is_the_layers_bias_or_none():
    """Block.bias is the module's ``bias`` beside its ``weight`` (the same storage), None without one and for a
    block that is a slice of a parameter (nn.MultiheadAttention's q, k, v rows of ``in_proj_weight``)."""
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5), nn.ReLU(),
                        nn.Linear(5, 2, bias=False))
    G = graphprune.from_model(net, torch.randn(1, 3, 8, 8))
    conv, lin, head = G.weight_blocks
    assert conv.bias.data_ptr() == net[0].bias.data_ptr() and conv.bias.shape == (4,)
    assert lin.bias.data_ptr() == net[3].bias.data_ptr() and head.bias is None
    assert all(b.bias is not None for b in G.with_masks({"0.weight": net[0].weight != 0}).weight_blocks[:2])
    mha = TinyTransformer()
    H = graphprune.from_model(mha, torch.randn(1, 5, 6))
    sliced = [b for b in H.weight_blocks if b.param_slice is not None]
    assert sliced and all(b.bias is None for b in sliced)
