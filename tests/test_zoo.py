"""The networks people prune today, at tiny sizes (random init, nothing downloaded): export with every prunable
weight covered, validate, sparsify, apply the masks and run; plus the encodings each family relies on."""

import copy
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import graphprune

V = 97  # vocabulary of the tiny language models


def _ids(n=8):
    return torch.randint(0, V, (1, n), generator=torch.Generator().manual_seed(0))


def _hf(name):
    T = pytest.importorskip("transformers")
    T.logging.set_verbosity_error()
    ids, mask = _ids(), torch.ones(1, 8, dtype=torch.long)
    if name == "gpt2":
        c = T.GPT2Config(vocab_size=V, n_positions=16, n_embd=32, n_layer=2, n_head=4)
        return T.GPT2LMHeadModel(c), {"input_ids": ids, "attention_mask": mask}
    if name in ("llama", "mistral", "qwen2"):
        cfg, cls = {"llama": (T.LlamaConfig, T.LlamaForCausalLM), "mistral": (T.MistralConfig, T.MistralForCausalLM),
                    "qwen2": (T.Qwen2Config, T.Qwen2ForCausalLM)}[name]
        c = cfg(vocab_size=V, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=32)
        return cls(c), {"input_ids": ids, "attention_mask": mask}
    small = dict(vocab_size=V, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                 max_position_embeddings=32)
    more = {"gpt_neox": (T.GPTNeoXConfig, T.GPTNeoXForCausalLM, {}),  # partial rotary, packed qkv
            "phi3": (T.Phi3Config, T.Phi3ForCausalLM, dict(num_key_value_heads=2, pad_token_id=0)),  # gate_up chunk
            "gemma": (T.GemmaConfig, T.GemmaForCausalLM, dict(num_key_value_heads=2, head_dim=8)),
            "qwen3": (T.Qwen3Config, T.Qwen3ForCausalLM, dict(num_key_value_heads=2, head_dim=8)),  # q/k norms
            "roberta": (T.RobertaConfig, T.RobertaModel, {})}
    if name in more:
        cfg, cls, extra = more[name]
        return cls(cfg(**small, **extra)), {"input_ids": ids, "attention_mask": mask}
    if name == "opt":
        c = T.OPTConfig(vocab_size=V, hidden_size=32, ffn_dim=48, num_hidden_layers=2, num_attention_heads=4,
                        max_position_embeddings=32, word_embed_proj_dim=32)
        return T.OPTForCausalLM(c), {"input_ids": ids, "attention_mask": mask}
    if name == "bert":
        c = T.BertConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=48, max_position_embeddings=32)
        return T.BertModel(c), {"input_ids": ids, "attention_mask": mask}
    if name == "distilbert":
        c = T.DistilBertConfig(vocab_size=V, dim=32, n_layers=2, n_heads=4, hidden_dim=48, max_position_embeddings=32)
        return T.DistilBertModel(c), {"input_ids": ids, "attention_mask": mask}
    if name == "t5":
        c = T.T5Config(vocab_size=V, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4)
        return T.T5ForConditionalGeneration(c), {"input_ids": ids, "decoder_input_ids": _ids(5)}
    if name == "clip_text":
        c = T.CLIPTextConfig(vocab_size=V, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                             num_attention_heads=4, max_position_embeddings=16)
        return T.CLIPTextModel(c), {"input_ids": ids}
    if name == "clip_vision":
        c = T.CLIPVisionConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                               image_size=32, patch_size=8)
        return T.CLIPVisionModel(c), {"pixel_values": torch.randn(1, 3, 32, 32)}
    if name == "vit":
        c = T.ViTConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                        image_size=32, patch_size=8)
        return T.ViTModel(c), {"pixel_values": torch.randn(1, 3, 32, 32)}
    raise KeyError(name)


def _timm(name):
    timm = pytest.importorskip("timm")
    x = torch.randn(1, 3, 32, 32)
    small = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, num_classes=10)
    if name == "vit":
        return timm.create_model("vit_small_patch16_224", **small), x
    if name == "deit":
        return timm.create_model("deit_tiny_patch16_224", **small), x
    if name == "swin":
        model = timm.create_model("swin_tiny_patch4_window7_224", img_size=64, patch_size=4, window_size=4,
                                  embed_dim=16, depths=(1, 1), num_heads=(2, 4), num_classes=10)
        return model, torch.randn(1, 3, 64, 64)
    if name == "swin_shifted":  # an 8 x 8 grid of 4 x 4 windows: the second block shifts them by 2 (issue 22)
        model = timm.create_model("swin_tiny_patch4_window7_224", img_size=32, patch_size=4, window_size=4,
                                  embed_dim=16, depths=(2,), num_heads=(2,), num_classes=10)
        return model, x
    if name == "mixer":
        from timm.models.mlp_mixer import MlpMixer

        return MlpMixer(img_size=32, patch_size=8, embed_dim=32, num_blocks=2, num_classes=10), x
    names = {"convnext": "convnext_atto", "efficientnet": "efficientnet_b0", "regnet": "regnetx_002",
             "mobilenetv3": "mobilenetv3_small_050"}
    return timm.create_model(names[name], num_classes=10), x


def _tv(name):
    tv = pytest.importorskip("torchvision")
    M = tv.models
    from torchvision.models import swin_transformer as sw

    x = torch.randn(1, 3, 32, 32)
    tiny = dict(patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[2, 4], window_size=[4, 4], num_classes=10)
    if name == "swin":
        return M.SwinTransformer(**tiny), x
    if name == "swin_v2":
        return M.SwinTransformer(**tiny, block=sw.SwinTransformerBlockV2, downsample_layer=sw.PatchMergingV2), x
    if name == "maxvit_t":
        return M.MaxVit(input_size=(32, 32), stem_channels=8, partition_size=2, block_channels=[16, 32],
                        block_layers=[1, 1], head_dim=8, stochastic_depth_prob=0.0, num_classes=10), x
    if name == "inception_v3":
        return M.inception_v3(num_classes=10, aux_logits=True, init_weights=False), torch.randn(1, 3, 299, 299)
    raise KeyError(name)


ZOO = {f"hf-{n}": (_hf, n) for n in ("gpt2", "llama", "mistral", "qwen2", "bert", "distilbert", "t5", "clip_text",
                                      "clip_vision", "vit", "gpt_neox", "phi3", "gemma", "qwen3", "roberta", "opt")}
ZOO.update({f"timm-{n}": (_timm, n) for n in ("vit", "deit", "swin", "swin_shifted", "mixer", "convnext",
                                              "efficientnet", "regnet", "mobilenetv3")})
ZOO.update({f"tv-{n}": (_tv, n) for n in ("swin", "swin_v2", "maxvit_t", "inception_v3")})


def build(key):
    fn, name = ZOO[key]
    torch.manual_seed(0)
    model, x = fn(name)
    with torch.no_grad():  # zero-initialised heads (timm): random values, so every block is sampled by its method
        # (an all-zero block would take the shared uniform rule, tested in tests/test_zero_blocks.py)
        for p in model.parameters():
            if p.dim() >= 2 and not bool(p.any()):
                p.normal_(0, 0.02)
    return model, x  # in its default (training) mode: fx traces training-only branches (inception's AuxLogits)


def expected_weights(model):
    """Prunable weights by hand: every Linear / ConvNd / Embedding / attention-projection / transformers Conv1D
    weight, each parameter once (tied ones share it)."""
    kinds = [nn.Linear, nn.modules.conv._ConvNd, nn.Embedding]
    try:
        from transformers.pytorch_utils import Conv1D

        kinds.append(Conv1D)
    except ImportError:
        pass
    seen, out = set(), {}
    names = {}
    for n, p in model.named_parameters():
        names.setdefault(id(p), n)
    for m in model.modules():
        ws = [m.in_proj_weight] if isinstance(m, nn.MultiheadAttention) and m.in_proj_weight is not None else []
        if isinstance(m, tuple(kinds)):
            ws.append(m.weight)
        for w in ws:
            if id(w) not in seen:
                seen.add(id(w))
                out[names[id(w)]] = w.numel()
    return out


def _run(model, x):
    model.eval()
    with torch.no_grad():
        return model(**x) if isinstance(x, dict) else model(x)


def _tensors(out):
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _tensors(o)]
    return []


@pytest.mark.parametrize("key", list(ZOO))
def test_zoo_exports_prunes_and_runs(key):
    model, x = build(key)
    before = copy.deepcopy(model.state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a left-out weight would warn
        G = graphprune.from_model(model, x)
    assert G.left_out == {}
    want = expected_weights(model)
    assert set(G.params) == set(want)
    assert sum(int(np.prod(G.param_shapes[p])) for p in G.params) == sum(want.values())
    assert G.validate() == []
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    for method in ("spectral", "random"):
        masks = graphprune.sparsify(G, method, sparsity=0.9, seed=0, progress=False)
        assert 0.0 < G.with_masks(masks).density() < 0.3, method
    pruned = copy.deepcopy(model)
    graphprune.apply_masks(pruned, masks=masks)
    graphprune.make_permanent(pruned)
    after = dict(pruned.named_parameters())
    for name, m in masks.items():  # exactly the masked elements are zero, the kept ones untouched
        w0, w1 = before[name], after[name].detach()
        assert torch.equal(w1[~m], torch.zeros_like(w1[~m])), name
        assert torch.equal(w1[m], w0[m]), name
    outs = _tensors(_run(pruned, x))
    assert outs and all(torch.isfinite(t).all() for t in outs if t.is_floating_point())


# -- the encodings each family relies on ----------------------------------------------------------------------------
def _jacobian(module, x):
    return torch.autograd.functional.jacobian(lambda t: module(t).reshape(-1), x).reshape(-1, x.numel())


def test_gpt2_conv1d_edges_are_the_transposed_weight_and_tied_head_shares_one_mask():
    model, x = build("hf-gpt2")
    G = graphprune.from_model(model, x)
    c_fc = model.transformer.h[0].mlp.c_fc
    (blk,) = G.blocks_of("transformer.h.0.mlp.c_fc.weight")
    assert blk.layout == "embedding" and tuple(blk.weight.shape) == (32, 128)  # Conv1D stores (in, out)
    J = _jacobian(c_fc, torch.randn(1, 1, 32))  # d out_o / d in_i, by autograd
    B = G.biadjacency(blk, weighted=True).toarray()  # (dst, src), |w|
    assert np.allclose(B, J.abs().numpy(), atol=1e-6)
    # the tied lm_head and wte: one parameter, two blocks, one mask
    assert "lm_head.weight" not in G.params and len(G.blocks_of("transformer.wte.weight")) == 2
    m = {"transformer.wte.weight": torch.rand(V, 32) > 0.5}
    pruned = copy.deepcopy(model)
    graphprune.apply_masks(pruned, masks=m)
    graphprune.make_permanent(pruned)
    assert torch.equal(pruned.lm_head.weight == 0, ~m["transformer.wte.weight"])


def test_llama_rmsnorm_rotary_gqa_and_swiglu():
    model, x = build("hf-llama")
    G = graphprune.from_model(model, x)
    assert not any("norm" in p for p in G.params)  # RMSNorm weights are not edges
    attn = "model.layers.0.self_attn"
    o_src = G.partition(G.blocks_of(f"{attn}.o_proj.weight")[0].src)
    assert o_src.size == 32  # 4 query heads x 8
    into = {b.src: b for b in G.blocks if b.dst == o_src.name}
    k_part, v_part = G.blocks_of(f"{attn}.k_proj.weight")[0].dst, G.blocks_of(f"{attn}.v_proj.weight")[0].dst
    assert G.partition(k_part).size == 16  # 2 key/value heads x 8
    # by hand: query head h uses key/value head h // 2; a key channel feeds every output of its query heads
    want_k = {(c, h * 8 + i) for c in range(16) for h in range(4) if h // 2 == c // 8 for i in range(8)}
    s, d = into[k_part].edge_index()
    assert into[k_part].edge_kind == "score" and set(zip(s.tolist(), d.tolist())) == want_k
    want_v = {(g * 8 + i, h * 8 + i) for h in range(4) for g in (h // 2,) for i in range(8)}
    s, d = into[v_part].edge_index()
    assert into[v_part].edge_kind == "feature" and set(zip(s.tolist(), d.tolist())) == want_v
    # SwiGLU: down_proj reads the product of gate and up, a partition fed by both
    mlp = "model.layers.0.mlp"
    prod = G.blocks_of(f"{mlp}.down_proj.weight")[0].src
    feeds = {b.src for b in G.blocks if b.dst == prod}
    assert feeds == {G.blocks_of(f"{mlp}.gate_proj.weight")[0].dst, G.blocks_of(f"{mlp}.up_proj.weight")[0].dst}


def test_mixer_token_mixing_is_a_block_between_token_partitions():
    model, x = build("timm-mixer")
    G = graphprune.from_model(model, x)
    (blk,) = G.blocks_of("blocks.0.mlp_tokens.fc1.weight")
    n_tokens = (32 // 8) ** 2
    assert G.partition(blk.src).kind == "token" and G.partition(blk.src).size == n_tokens
    assert blk.n_src == n_tokens and blk.n_dst == model.blocks[0].mlp_tokens.fc1.out_features


@pytest.mark.parametrize("key, path", [("timm-swin", "layers.1.downsample.reduction.weight"),
                                       ("tv-swin", "features.2.reduction.weight")])
def test_swin_patch_merging_is_space_to_channel(key, path):
    model, x = build(key)
    G = graphprune.from_model(model, x)
    (blk,) = G.blocks_of(path)
    C = 16
    merged = G.partition(blk.src)
    assert merged.size == 4 * C
    # every merged node copies one input channel; each input channel is copied into the 4 offsets
    feeding = [b for b in G.blocks if b.dst == merged.name or b.dst in {
        x.src for x in G.blocks if x.dst == merged.name}]
    ident = [b for b in feeding if not b.is_weight and b.num_edges == 4 * C]
    assert ident, [b for b in feeding]
    s, d = ident[0].edge_index()
    assert sorted(d.tolist()) == list(range(4 * C)) and np.bincount(s, minlength=C).tolist() == [4] * C


def test_training_only_branch_left_out_in_eval_mode_is_named():
    model, x = build("tv-inception_v3")
    model.eval()
    with pytest.warns(UserWarning, match=r"AuxLogits\.fc\.weight': not used by the traced forward"):
        G = graphprune.from_model(model, x)
    assert set(G.left_out) == {"AuxLogits.conv0.conv.weight", "AuxLogits.conv1.conv.weight", "AuxLogits.fc.weight"}
    assert "AuxLogits.fc.weight: not used" in G.summary()


def _autograd_feeds(model, x, src_module, dst_module):
    """{dst input channel: set of src output channels it depends on}, by autograd (summed over positions)."""
    acts = {}

    def keep_out(module, inputs, out):
        out.retain_grad()
        acts["src"] = out

    def keep_in(module, inputs):
        acts["dst"] = inputs[0]

    h1 = src_module.register_forward_hook(keep_out)
    h2 = dst_module.register_forward_pre_hook(keep_in)
    try:
        model.eval()
        model(**x) if isinstance(x, dict) else model(x)
    finally:
        h1.remove()
        h2.remove()
    feeds = {}
    n = acts["dst"].shape[-1]
    for j in range(n):
        acts["src"].grad = None
        acts["dst"][..., j].sum().backward(retain_graph=True)
        g = acts["src"].grad.abs().reshape(-1, acts["src"].shape[-1]).sum(0)
        feeds[j] = set(torch.nonzero(g > 0).flatten().tolist())
    return feeds


def _graph_feeds(G, src_part, dst_part):
    feeds = {}
    for b in G.blocks:
        if b.src == src_part and b.dst == dst_part:
            for s, d in zip(*b.edge_index()):
                feeds.setdefault(int(d), set()).add(int(s))
    return feeds


@pytest.mark.parametrize("key, attn, src, dst", [
    ("hf-llama", "model.layers.1.self_attn", "k_proj", "o_proj"),
    ("hf-llama", "model.layers.1.self_attn", "q_proj", "o_proj"),
    ("hf-llama", "model.layers.1.self_attn", "v_proj", "o_proj"),
    ("hf-qwen2", "model.layers.0.self_attn", "k_proj", "o_proj"),
    ("hf-bert", "encoder.layer.0.attention", "self.key", "output.dense"),
    ("hf-bert", "encoder.layer.0.attention", "self.value", "output.dense"),
    ("timm-vit", "blocks.0.attn", "qkv", "proj"),
    ("timm-swin", "layers.0.blocks.0.attn", "qkv", "proj"),
    ("timm-swin_shifted", "layers.0.blocks.1.attn", "qkv", "proj"),  # scores viewed to add the window mask
    ("hf-clip_text", "encoder.layers.0.self_attn", "k_proj", "out_proj"),
])
def test_attention_edges_match_autograd_dependencies(key, attn, src, dst):
    """Edges into an attention's output projection are exactly the channels it depends on (rotary, grouped-query
    and packed-qkv attention included)."""
    model, x = build(key)
    torch.manual_seed(1)
    with torch.no_grad():  # break the symmetry of constant initialisations (zero biases, unit norms)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    G = graphprune.from_model(model, x)
    src_m, dst_m = model.get_submodule(f"{attn}.{src}"), model.get_submodule(f"{attn}.{dst}")
    src_part = G.blocks_of(f"{attn}.{src}.weight")[0].dst
    dst_part = G.blocks_of(f"{attn}.{dst}.weight")[0].src
    want = _autograd_feeds(model, x, src_m, dst_m)
    got = _graph_feeds(G, src_part, dst_part)
    assert {j: got.get(j, set()) for j in want} == want


def test_mixture_of_experts_routing_is_refused_by_name():
    T = pytest.importorskip("transformers")
    T.logging.set_verbosity_error()
    c = T.MixtralConfig(vocab_size=V, hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=4,
                        num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, max_position_embeddings=32)
    with pytest.raises(graphprune.errors.UnsupportedOperationError, match=r"'topk' at module 'model\.layers\.0\.mlp"):
        graphprune.from_model(T.MixtralForCausalLM(c), {"input_ids": _ids()})


def test_detection_model_names_its_data_dependent_flow_and_its_backbone_exports(capfd):
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = tv.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None)
    with pytest.raises(graphprune.errors.TracingError, match=r"data-dependent control flow.*model\.backbone"):
        graphprune.from_model(model, ([torch.randn(3, 320, 320)],))
    assert capfd.readouterr().err == ""  # torch.export's partial graph is not printed
    G = graphprune.from_model(model.backbone, torch.randn(1, 3, 320, 320))
    want = expected_weights(model.backbone)
    assert G.left_out == {} and set(G.params) == set(want)


@pytest.mark.parametrize("key", ["timm-vit", "timm-deit", "timm-mixer", "timm-swin", "timm-swin_shifted",
                                 "tv-swin_v2"])
def test_fx_and_torch_export_give_the_same_graph(key):
    """Two tracers, two code paths (fx keeps layers and torchvision's window attention whole; torch.export gives
    ATen ops): the same graph."""
    model, x = build(key)
    a = graphprune.from_model(model, x, tracer="fx")
    b = graphprune.from_model(model, x, tracer="export")
    assert sorted(a.params) == sorted(b.params) and b.left_out == {}
    assert [p.size for p in a.partitions] == [p.size for p in b.partitions]
    assert np.allclose(a.adjacency().toarray(), b.adjacency().toarray())


def test_swin_shifted_windows_keep_their_score_edges():
    """Shifted windows view the scores (B * nW, heads, N, N) as (B, nW, heads, N, N) to add the window mask and back:
    the shifted block's attention gets the same edges as the unshifted one (2 heads of 8 channels: q and k of head
    h feed the 8 outputs of head h, 2 * 8 * 8 score edges each, by hand; v feeds its own output channel)."""
    model, x = build("timm-swin_shifted")
    blocks = model.layers[0].blocks
    assert blocks[0].attn_mask is None and blocks[1].attn_mask is not None  # the premise: block 1 is shifted
    G = graphprune.from_model(model, x)
    for i in (0, 1):
        out = G.blocks_of(f"layers.0.blocks.{i}.attn.proj.weight")[0].src
        into = sorted((b.edge_kind, b.num_edges) for b in G.blocks if b.dst == out)
        assert into == [("feature", 16), ("score", 2 * 8 * 8), ("score", 2 * 8 * 8)], i


@pytest.mark.parametrize("name", ["swin_tiny_patch4_window7_224", "swin_small_patch4_window7_224"])
def test_timm_swin_standard_configuration_exports_with_full_coverage(name):
    """The standard configurations (224 px, 7 x 7 windows, shifted every second block), random init, nothing
    downloaded: every prunable weight covered (6 s and 13 s here on a shared 2-core machine)."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a left-out weight would warn
        G = graphprune.from_model(model, torch.randn(1, 3, 224, 224))
    want = expected_weights(model)
    assert G.left_out == {} and set(G.params) == set(want)
    assert sum(int(np.prod(G.param_shapes[p])) for p in G.params) == sum(want.values())
    assert G.validate() == []


def test_t5_relative_position_bias_feeds_its_heads_through_score_edges():
    model, x = build("hf-t5")
    G = graphprune.from_model(model, x)  # decoder_input_ids passed by keyword
    (emb,) = G.blocks_of("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight")
    assert G.partition(emb.src).kind == "token" and G.partition(emb.src).size == 32  # the position buckets
    out = [b for b in G.blocks if b.src == emb.dst]
    assert len(out) == 2 and all(b.edge_kind == "score" for b in out)  # both encoder layers reuse the bias
    for b in out:  # head h of the bias feeds the 8 outputs of head h, by hand
        s, d = b.edge_index()
        assert set(zip(s.tolist(), d.tolist())) == {(h, h * 8 + i) for h in range(4) for i in range(8)}
