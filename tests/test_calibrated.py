"""Calibration data and the data-aware sparsifiers, against hand computations written here with numpy."""

from __future__ import annotations

import copy
import importlib

import numpy as np
import pytest
import torch
from torch import nn

import graphprune
from graphprune.calibrate import check_batches, stages
from graphprune.errors import ParameterError
from graphprune.sparsify.calibrated import dense_target, ls_repair, obs_prune
from graphprune.sparsify.score import row_shares


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 12), nn.ReLU(), nn.Linear(12, 4))


def _x(n=64, d=8, seed=1):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def _row_topk(score: np.ndarray, k_per_row) -> np.ndarray:
    """Naive per-row top-k with ties to the earlier column (a Python sort per row)."""
    keep = np.zeros(score.shape, dtype=bool)
    for r in range(score.shape[0]):
        order = sorted(range(score.shape[1]), key=lambda j: (-score[r, j], j))
        keep[r, order[: k_per_row[r]]] = True
    return keep


def test_wanda_first_layer_is_the_hand_score_per_row():
    net, x = _mlp(), _x()
    G = graphprune.from_model(net, x[:1])
    m = graphprune.sparsify(G, "wanda", sparsity=0.5, model=net, data=x)
    W = net[0].weight.detach().double().numpy()
    norms = np.sqrt((x.double().numpy() ** 2).sum(0))
    want = _row_topk(np.abs(W) * norms[None, :], [4] * 12)
    assert np.array_equal(m["0.weight"].numpy(), want)


def test_wanda_second_layer_sees_the_first_layer_already_pruned():
    net, x = _mlp(), _x()
    G = graphprune.from_model(net, x[:1])
    m = graphprune.sparsify(G, "wanda", sparsity=0.5, model=net, data=x)
    W1 = net[0].weight.detach().double().numpy() * m["0.weight"].numpy()
    h = np.maximum(x.double().numpy() @ W1.T + net[0].bias.detach().double().numpy(), 0)  # pruned first layer
    W2 = net[2].weight.detach().double().numpy()
    want = _row_topk(np.abs(W2) * np.sqrt((h**2).sum(0))[None, :], [6] * 4)
    assert np.array_equal(m["2.weight"].numpy(), want)
    dense_h = np.maximum(x.double().numpy() @ net[0].weight.detach().double().numpy().T
                         + net[0].bias.detach().double().numpy(), 0)
    other = _row_topk(np.abs(W2) * np.sqrt((dense_h**2).sum(0))[None, :], [6] * 4)
    assert not np.array_equal(want, other)  # the test can tell sequential from one-pass statistics


def test_ria_is_relative_importance_times_root_norm():
    net, x = _mlp(), _x()
    G = graphprune.from_model(net, x[:1])
    m = graphprune.sparsify(G, "ria", sparsity=0.75, model=net, data=x)
    A = np.abs(net[0].weight.detach().double().numpy())
    ri = np.zeros_like(A)
    for i in range(A.shape[0]):
        for j in range(A.shape[1]):
            ri[i, j] = A[i, j] / A[:, j].sum() + A[i, j] / A[i, :].sum()
    norms = np.sqrt((x.double().numpy() ** 2).sum(0))
    assert np.array_equal(m["0.weight"].numpy(), _row_topk(ri * norms[None, :] ** 0.5, [2] * 12))


@pytest.mark.parametrize("chunk", [None, 1, 20])
def test_magnitude_row_comparison_and_2_4_against_loops(chunk, monkeypatch):
    """Also with the rows taken in chunks (one row, and 2 rows of 8 inputs, at a time): the same loops hold."""
    if chunk is not None:
        import importlib

        monkeypatch.setattr(importlib.import_module("graphprune.sparsify.score"), "_ROW_CHUNK", chunk)
    net = _mlp()
    G = graphprune.from_model(net, _x()[:1])
    W = np.abs(net[0].weight.detach().double().numpy())
    m = graphprune.sparsify(G, "magnitude", sparsity=0.5, comparison="row")["0.weight"].numpy()
    assert np.array_equal(m, _row_topk(W, [4] * 12))
    m = graphprune.sparsify(G, "magnitude", nm="2:4")["0.weight"].numpy()
    for r in range(12):
        for g in range(0, 8, 4):
            grp = W[r, g : g + 4]
            best = sorted(range(4), key=lambda j: (-grp[j], j))[:2]
            assert sorted(np.flatnonzero(m[r, g : g + 4]).tolist()) == sorted(best)
    block = graphprune.sparsify(G, "magnitude", sparsity=0.5)["0.weight"].numpy()
    assert block.sum() == 48 and not np.array_equal(block, _row_topk(W, [4] * 12))


def test_nm_refuses_a_disagreeing_sparsity_and_a_width_not_divisible():
    net = nn.Sequential(nn.Linear(6, 4))
    G = graphprune.from_model(net, torch.randn(1, 6))
    with pytest.raises(ParameterError, match="a density of 0.5, but sparsity asks for a density of 0.3"):
        graphprune.sparsify(G, "magnitude", sparsity=0.7, nm=(2, 4))
    with pytest.raises(ParameterError, match="multiple of 4; block '0' has 6 inputs"):
        graphprune.sparsify(G, "magnitude", nm=(2, 4))
    with pytest.raises(ParameterError, match="'nm' parameter"):
        graphprune.sparsify(G, "magnitude", nm=(4, 2))
    with pytest.raises(ParameterError, match="must be 'uniform' with an N:M pattern"):
        graphprune.sparsify(G, "magnitude", nm=(1, 2), allocation="erk")


def test_row_shares_sum_to_k_and_respect_capacity():
    for a, k in (([5, 5, 5], 7), ([0, 3, 10], 8), ([2, 2], 4), ([1, 9], 0)):
        s = row_shares(np.array(a), k)
        assert s.sum() == min(k, sum(a)) and (s <= np.array(a)).all()
    assert row_shares(np.array([4, 4, 4]), 6).tolist() == [2, 2, 2]


def _damped(H, damp=0.01):
    H = H.copy()
    H[np.diag_indices_from(H)] += damp * np.mean(np.diag(H))
    return H


def test_obs_sweep_equals_exact_obs_for_the_first_column_and_least_squares_when_pruned_come_first():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 6))
    H = X.T @ X
    w = rng.normal(size=(1, 6))
    Hd = _damped(H)
    Hi = np.linalg.inv(Hd)
    # exact OBS (Hassibi & Stork 1992): removing weight q moves w by -w_q / [H^-1]_qq * H^-1 e_q
    keep = torch.ones(1, 6, dtype=torch.bool)
    keep[0, 0] = False
    _, new = obs_prune(torch.from_numpy(w), torch.from_numpy(H), keep, 5, fixed=keep)
    want = w[0] - w[0, 0] / Hi[0, 0] * Hi[:, 0]
    assert np.allclose(new.numpy()[0], want, atol=1e-10) and new[0, 0] == 0
    # the first p columns pruned: the sweep reaches the least-squares optimum on the kept ones
    keep = torch.tensor([[False, False, True, True, True, True]])
    _, new = obs_prune(torch.from_numpy(w), torch.from_numpy(H), keep, 4, fixed=keep)
    S = [2, 3, 4, 5]
    v = np.linalg.solve(Hd[np.ix_(S, S)], (Hd @ w[0])[S])
    assert np.allclose(new.numpy()[0, S], v, atol=1e-9)


def test_ls_repair_solves_each_rows_normal_equations():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(80, 7))
    H = X.T @ X
    W = rng.normal(size=(5, 7))
    keep = rng.random((5, 7)) < 0.6
    keep[:, 0] = True
    out = ls_repair(torch.from_numpy(W), torch.from_numpy(H), torch.from_numpy(keep)).numpy()
    Hd = _damped(H)
    for r in range(5):
        S = np.flatnonzero(keep[r])
        v = np.linalg.solve(Hd[np.ix_(S, S)], (Hd @ W[r])[S])
        assert np.allclose(out[r, S], v, atol=1e-9) and (out[r, ~keep[r]] == 0).all()


def test_repairs_lower_the_reconstruction_error_and_are_written_to_the_model():
    net = _mlp(3)
    x = _x(256) @ torch.randn(8, 8, generator=torch.Generator().manual_seed(5))  # correlated inputs
    ref, h_ref = net(x).detach(), net[0](x).detach()
    errs, layer = {}, {}
    for method, kw in (("wanda", {}), ("sparsegpt", {}), ("flow", {"repair": "none"}), ("flow", {"repair": "ls"})):
        n2 = copy.deepcopy(net)
        graphprune.prune(n2, x[:1], method, sparsity=0.6, calibration=x, permanent=True, progress=False, **kw)
        key = method + kw.get("repair", "")
        with torch.no_grad():
            errs[key] = float(((n2(x) - ref) ** 2).mean())
            layer[key] = float(((n2[0](x) - h_ref) ** 2).mean())
        if key in ("sparsegpt", "flowls"):
            kept = n2[2].weight != 0
            assert not torch.equal(n2[2].weight[kept], net[2].weight[kept])  # kept weights were repaired
    assert errs["sparsegpt"] < errs["wanda"]
    assert layer["flowls"] < 0.9 * layer["flownone"]  # the same mask, least-squares weights


def test_flow_leverage_matches_resistance_from_the_pseudoinverse():
    net, x = _mlp(), _x()
    G = graphprune.from_model(net, x[:1])
    m = graphprune.sparsify(G, "flow", sparsity=0.5, model=net, data=x, repair="none")["0.weight"].numpy()
    A = np.abs(net[0].weight.detach().double().numpy()) * np.sqrt((x.double().numpy() ** 2).sum(0))[None, :]
    o, i = A.shape
    L = np.zeros((o + i, o + i))
    for r in range(o):
        for c in range(i):
            u, v = r, o + c
            L[u, u] += A[r, c]
            L[v, v] += A[r, c]
            L[u, v] -= A[r, c]
            L[v, u] -= A[r, c]
    P = np.linalg.pinv(L)
    lev = np.array([[A[r, c] * (P[r, r] + P[o + c, o + c] - 2 * P[r, o + c]) for c in range(i)] for r in range(o)])
    assert np.array_equal(m, _row_topk(lev, [4] * 12))


def test_permanent_and_masked_paths_agree_on_masks_and_weights():
    net, x = _mlp(2), _x(128)
    a, b = copy.deepcopy(net), copy.deepcopy(net)
    ma = graphprune.prune(a, x[:1], "sparsegpt", sparsity=0.5, calibration=x, permanent=True, progress=False)
    mb = graphprune.prune(b, x[:1], "sparsegpt", sparsity=0.5, calibration=x, permanent=False, progress=False)
    for name in ("0.weight", "2.weight"):
        assert torch.equal(ma[name], mb[name])
        assert torch.equal(dict(a.named_parameters())[name], b[int(name[0])].weight)


def test_conv_statistics_are_the_unfolded_patches():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv1d(2, 3, 3, padding=1, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4, 2))
    x = torch.randn(5, 2, 8)
    G = graphprune.from_model(net, x[:1])
    st = graphprune.calibrate.gather(net, stages(G, [G.block("0")])[0], check_batches(x, owner="t"), gram=True)["0"]
    xp = np.pad(x.double().numpy(), ((0, 0), (0, 0), (1, 1)))
    rows = []
    for n in range(5):
        for t in range(0, 8, 2):  # stride 2, kernel 3 on the padded length 10: 4 positions
            rows.append([xp[n, c, t + j] for c in range(2) for j in range(3)])
    X = np.array(rows)
    assert st.n == 20 and np.allclose(st.sq_norms.numpy(), (X**2).sum(0)) and np.allclose(st.gram.numpy(), X.T @ X)
    graphprune.sparsify(G, "sparsegpt", sparsity=0.5, model=net, data=x)  # runs on a conv -> flatten -> linear


def test_embedding_statistics_are_token_counts():
    net = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(12, 2))
    ids = torch.tensor([[1, 1, 2], [3, 1, 9]])
    G = graphprune.from_model(net, ids[:1])
    st = graphprune.calibrate.gather(net, stages(G, G.weight_blocks)[0], [ids])["0"]
    assert st.sq_norms.tolist() == [0, 3, 1, 1, 0, 0, 0, 0, 0, 1]


def test_a_stage_stops_the_forward_after_its_modules():
    net, x = _mlp(), _x()
    G = graphprune.from_model(net, x[:1])
    calls = []
    h = net[2].register_forward_hook(lambda *a: calls.append(1))
    graphprune.calibrate.gather(net, stages(G, G.weight_blocks)[0], [x, x])
    h.remove()
    assert calls == []


def _llama(layers):
    """A tiny random Llama (GQA 4/2) in eval mode; skips without transformers."""
    T = pytest.importorskip("transformers")
    T.logging.set_verbosity_error()
    c = T.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
    torch.manual_seed(0)
    return T.LlamaForCausalLM(c).eval()


def test_llama_stages_group_q_k_v_and_gate_up_and_prune_runs():
    model = _llama(2)
    ids = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(0))
    G = graphprune.from_model(model, {"input_ids": ids[:1]})
    keep = ["model.embed_tokens.weight", "lm_head.weight"]
    units = [b for b in G.weight_blocks if b.param not in keep]
    names = [[b.name.rsplit(".", 1)[1] for b in s] for s in stages(G, units)]
    assert names[:4] == [["q_proj", "k_proj", "v_proj"], ["o_proj"], ["gate_proj", "up_proj"], ["down_proj"]]
    assert len(names) == 8
    before = model.model.embed_tokens.weight.clone()
    masks = graphprune.prune(model, {"input_ids": ids[:1]}, "flow", sparsity=0.5, calibration={"input_ids": ids},
                             keep_dense=keep, permanent=True, progress=False)
    assert masks["model.layers.1.mlp.down_proj.weight"].float().mean() == 0.5
    assert torch.equal(model.model.embed_tokens.weight, before)


@pytest.mark.parametrize("data, match", [
    ([], "yielded no batch"),
    ("text", "must be a tensor, a dict of tensors or an iterable"),
    (torch.full((4, 8), float("nan")), "NaN or inf"),
    ([torch.zeros(0, 8)], "empty tensor"),
    (torch.randn(4, 7), r"does not fit the model: the forward pass on calibration batch 0 failed"),
    ({"inputs": torch.randn(4, 8)}, r"does not fit the model"),
    (torch.ones(4, 8, dtype=torch.long), r"does not fit the model"),  # wrong dtype
    ([[1, 2]], "is a int, not a tensor"),
])
def test_bad_calibration_data_is_refused_before_any_weight_is_touched(data, match):
    net = _mlp()
    before = copy.deepcopy(net.state_dict())
    with pytest.raises(ParameterError, match=match):
        graphprune.prune(net, _x()[:1], "sparsegpt", sparsity=0.5, calibration=data, permanent=True, progress=False)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_calibration_with_a_data_free_method_or_twice_is_refused():
    net, x = _mlp(), _x()
    with pytest.raises(ParameterError, match="MagnitudeSparsifier .'magnitude'. uses no data"):
        graphprune.prune(net, x[:1], "magnitude", sparsity=0.5, calibration=x)
    with pytest.raises(ParameterError, match="Drop data="):
        graphprune.prune(net, x[:1], "wanda", sparsity=0.5, calibration=x, data=x)
    with pytest.raises(ParameterError, match="'data' parameter of WandaSparsifier is needed"):
        graphprune.sparsify(graphprune.from_model(net, x[:1]), "wanda", sparsity=0.5, model=net)


def test_default_method_with_calibration_is_the_calibrated_default():
    net, x = _mlp(), _x()
    a, b = copy.deepcopy(net), copy.deepcopy(net)
    ma = graphprune.prune(a, x[:1], sparsity=0.5, calibration=x, progress=False)
    mb = graphprune.prune(b, x[:1], importlib.import_module("graphprune.prune").DEFAULT_CALIBRATED_METHOD, sparsity=0.5,
                          calibration=x, progress=False)
    assert all(torch.equal(ma[k], mb[k]) for k in ma)


def test_cli_prune_with_a_repairing_method_saves_the_repaired_weights(tmp_path):
    from graphprune.cli import main

    out, sd = tmp_path / "m.pt", tmp_path / "sd.pt"
    rc = main(["prune", "graphprune.experiments.models:MLP", "--input-shape", "1,40", "--sparsifier", "sparsegpt",
               "--data", "synthetic", "--batches", "2", "--sparsity", "0.5", "--quiet", "--out", str(out),
               "--save-model", str(sd)])
    assert rc in (0, None)
    masks, state = graphprune.load_masks(out), torch.load(sd, weights_only=True)
    assert masks
    for name, m in masks.items():
        assert torch.equal(state[name] != 0, m)  # zeros exactly where pruned (repaired weights are non-zero)


def test_ls_repair_towards_a_reference_solves_the_cross_normal_equations():
    rng = np.random.default_rng(2)
    Xd = rng.normal(size=(60, 6))
    X = Xd + 0.3 * rng.normal(size=(60, 6))  # the pruned model's input drifted from the dense one
    W = rng.normal(size=(3, 6))
    keep = np.array([[1, 0, 1, 1, 0, 1], [1, 1, 1, 0, 0, 0], [0, 1, 1, 1, 1, 1]], dtype=bool)
    H = torch.from_numpy(X.T @ X)
    v0 = dense_target(torch.from_numpy(W), H, torch.from_numpy(X.T @ Xd))
    out = ls_repair(v0, H, torch.from_numpy(keep)).numpy()
    lam = 0.01 * np.mean(np.diag(X.T @ X))
    for r in range(3):
        S = np.flatnonzero(keep[r])
        A = np.vstack([X[:, S], np.sqrt(lam) * np.eye(len(S))])  # ridge towards w_S, as an augmented lstsq
        y = np.concatenate([Xd @ W[r], np.sqrt(lam) * W[r, S]])
        v = np.linalg.lstsq(A, y, rcond=None)[0]
        assert np.allclose(out[r, S], v, atol=1e-9)


def test_cached_decoder_layers_give_the_statistics_of_whole_forwards():
    from graphprune.calibrate import StageRunner

    model = _llama(3)
    ids = torch.randint(0, 64, (6, 16), generator=torch.Generator().manual_seed(1))
    G = graphprune.from_model(model, {"input_ids": ids[:1]})
    batches = check_batches([{"input_ids": ids[:3]}, {"input_ids": ids[3:]}], owner="t")
    units = [b for b in G.weight_blocks if b.param not in ("model.embed_tokens.weight", "lm_head.weight")]
    fast = StageRunner(model, batches, owner="t")
    fast.check(units)
    slow = StageRunner(model, batches, owner="t", cache_layers=False)
    assert fast.caches[id(model)] is not None and fast.caches[id(model)].prefix == "model.layers"
    for stage in stages(G, units):
        a, b = fast.gather(stage, gram=True), slow.gather(stage, gram=True)
        for name in a:
            assert torch.allclose(a[name].gram, b[name].gram, rtol=1e-10, atol=1e-10) and a[name].n == b[name].n
        with torch.no_grad():  # prune between stages, as the driver does: the cache must see it
            for blk in stage:
                graphprune.calibrate.param_of(model, blk.param)[:, ::2] = 0


def test_flow_degree_and_flow_criteria_against_hand_formulas():
    net, x = _mlp(), _x()
    G = graphprune.from_model(net, x[:1])
    n = np.sqrt((x.double().numpy() ** 2).sum(0))
    A = np.abs(net[0].weight.detach().double().numpy()) * n[None, :]
    deg = np.array([[A[i, j] * (1 / A[i, :].sum() + 1 / A[:, j].sum()) for j in range(8)] for i in range(12)])
    for crit, ref in (("degree", deg), ("flow", A)):
        m = graphprune.sparsify(G, "flow", sparsity=0.5, model=net, data=x, repair="none", criterion=crit)
        assert np.array_equal(m["0.weight"].numpy(), _row_topk(ref, [4] * 12))


def test_flow_auto_repair_is_least_squares_on_small_layers_and_the_sweep_on_7b_shapes():
    sp = graphprune.get_sparsifier("flow")(sparsity=0.5)
    small = torch.zeros(344, 128, dtype=torch.bool)  # the study's gate projection at 50%
    small[:, :64] = True
    assert sp._repair(small) == "ls"  # 344 * 64^3 / 3 <= 8 * (128^3 + 344 * 128^2)
    big = torch.zeros(4096, 4096, dtype=torch.bool)
    big[:, :2048] = True
    assert sp._repair(big) == "obs"  # 4096 * 2048^3 / 3 > 8 * (2 * 4096^3)


def test_units_reading_one_tensor_share_statistics_equal_to_a_hooked_forward():
    model = _llama(2)
    ids = torch.randint(0, 64, (3, 16), generator=torch.Generator().manual_seed(2))
    G = graphprune.from_model(model, {"input_ids": ids[:1]})
    seen = []
    h = model.model.layers[1].self_attn.v_proj.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    with torch.no_grad():
        model(input_ids=ids)
    h.remove()
    X = seen[0].reshape(-1, 32).double()
    stage = [G.block(f"model.layers.1.self_attn.{p}_proj") for p in "qkv"]
    st = graphprune.calibrate.gather(model, stage, [{"input_ids": ids}], gram=True)
    for name in st:
        assert torch.allclose(st[name].gram, X.T @ X) and torch.allclose(st[name].sq_norms, (X * X).sum(0))


def test_an_instance_used_by_prune_in_place_prunes_a_copy_in_sparsify_afterwards():
    net, x = _mlp(), _x()
    sp = graphprune.get_sparsifier("sparsegpt")(sparsity=0.5, model=net, data=x)
    with pytest.raises(ParameterError, match="is not the model being pruned"):
        graphprune.prune(copy.deepcopy(net), x[:1], sp, permanent=True, progress=False)
    graphprune.prune(net, x[:1], sp, permanent=True, progress=False)
    before = copy.deepcopy(net.state_dict())
    graphprune.sparsify(graphprune.from_model(net, x[:1]), sp)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
