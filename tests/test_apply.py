import copy
import io

import pytest
import torch
from models import build
from torch.nn.utils import prune

import graphprune
from graphprune.errors import MaskError


def _random_masks(model, p=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.rand(w.shape, generator=g) > p for n, w in model.named_parameters() if w.dim() >= 2}


@pytest.mark.parametrize("name", ["lenet5", "small_resnet", "transformer", "tied"])
def test_density_one_leaves_forward_identical(name):
    model, x = build(name)
    model.eval()
    with torch.no_grad():
        before = model(x)
    G = graphprune.from_model(model, x)
    graphprune.apply_masks(model, G)  # the graph's (dense) masks
    with torch.no_grad():
        after = model(x)
    assert torch.equal(before, after)


def test_random_mask_zeroes_exactly_the_masked_weights():
    model, x = build("small_resnet")
    orig = {n: p.detach().clone() for n, p in model.named_parameters()}
    G = graphprune.from_model(model, x)
    masks = graphprune.sparsify(G, "random", sparsity=0.7, seed=5)
    graphprune.apply_masks(model, G, masks)
    for name, m in masks.items():
        mod_name, _, attr = name.rpartition(".")
        w = getattr(model.get_submodule(mod_name), attr)
        assert torch.equal(w == 0, ~m | (orig[name] == 0))
        assert torch.equal(w[m], orig[name][m])
    # parameters without a mask (biases, batch norm) are untouched
    for n, p in model.named_parameters():
        if not n.endswith("_orig"):
            assert torch.equal(p, orig[n])


def test_masks_survive_state_dict_and_deepcopy():
    model, x = build("lenet5")
    masks = _random_masks(model)
    graphprune.apply_masks(model, masks=masks)
    clone = copy.deepcopy(model)
    assert torch.equal(clone(x), model(x))
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    fresh, _ = build("lenet5", seed=1)
    graphprune.apply_masks(fresh, masks={k: torch.ones_like(v) for k, v in masks.items()})
    buf.seek(0)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    assert torch.equal(fresh.fc1.weight_mask.bool(), masks["fc1.weight"])
    assert torch.equal(fresh(x), model(x))


def test_make_permanent_and_reexport():
    model, x = build("lenet5")
    masks = _random_masks(model)
    graphprune.apply_masks(model, masks=masks)
    G = graphprune.from_model(model, x)  # a pruned model exports with its masks
    assert torch.equal(G.param_mask("conv2.weight"), masks["conv2.weight"])
    graphprune.make_permanent(model)
    assert not hasattr(model.fc1, "weight_mask") and "fc1.weight" in dict(model.named_parameters())
    assert torch.equal(model.fc1.weight == 0, ~masks["fc1.weight"] | (model.fc1.weight == 0))


def test_masks_only_shrink_on_already_pruned_model():
    model, x = build("mlp")
    prune.random_unstructured(model[0], "weight", amount=0.5)
    first = model[0].weight_mask.bool().clone()
    second = _random_masks(model, seed=7)["0.weight_orig"]
    graphprune.apply_masks(model, masks={"0.weight": second})
    assert torch.equal(model[0].weight_mask.bool(), first & second)


def test_tied_parameter_is_masked_in_every_use():
    model, x = build("tied")
    m = torch.rand(11, 6, generator=torch.Generator().manual_seed(0)) > 0.5
    graphprune.apply_masks(model, masks={"emb.weight": m})
    assert torch.equal(model.emb.weight == 0, ~m) and torch.equal(model.head.weight == 0, ~m)


def test_bad_masks_change_nothing():
    model, x = build("lenet5")
    state = copy.deepcopy(model.state_dict())
    good = _random_masks(model)
    for bad, msg in [
        ({**good, "fc9.weight": torch.ones(2, 2, dtype=torch.bool)}, "no such parameter"),
        ({**good, "fc1.weight": torch.ones(3, 3, dtype=torch.bool)}, r"shape \(3, 3\)"),
        ({**good, "fc1.weight": torch.full((120, 400), 2.0)}, "only 0 and 1"),
        ([1, 2], "dict of parameter name"),
    ]:
        with pytest.raises(MaskError, match=msg):
            graphprune.apply_masks(model, masks=bad)
        assert model.state_dict().keys() == state.keys()
        assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_save_and_load_masks(tmp_path):
    model, _ = build("lenet5")
    masks = _random_masks(model)
    path = tmp_path / "masks.pt"
    graphprune.save_masks(masks, path)
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "graphprune-masks"
    back = graphprune.load_masks(path)
    assert back.keys() == masks.keys() and all(torch.equal(back[k], masks[k]) for k in masks)
    with pytest.raises(MaskError, match="No mask file"):
        graphprune.load_masks(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_text("not a torch file")
    with pytest.raises(MaskError, match="not a mask file"):
        graphprune.load_masks(tmp_path / "junk.pt")


@pytest.mark.parametrize("name", ["masks.pt", "masks.safetensors"])
def test_an_interrupted_save_leaves_the_earlier_file_whole(tmp_path, monkeypatch, name):
    """Files are written atomically: a write that dies half-way keeps the previous file, and no temporary."""
    import numpy as np

    model, _ = build("lenet5")
    first, second = _random_masks(model), _random_masks(model, seed=3)
    path = tmp_path / name
    graphprune.save_masks(first, path)
    before = path.read_bytes()

    def dies(*a, **k):  # the writer dies after it has started writing (disk full, killed)
        raise OSError(28, "No space left on device")

    if name.endswith(".pt"):
        monkeypatch.setattr(torch, "save", lambda obj, f: (open(f, "wb").write(b"half"), dies()))
        with pytest.raises(graphprune.errors.ParameterError, match="cannot write"):
            graphprune.save_masks(second, path)
    else:
        real = np.ascontiguousarray
        calls = []
        monkeypatch.setattr(np, "ascontiguousarray", lambda a: (calls.append(1), dies() if len(calls) > 1 else
                                                               real(a))[1])
        with pytest.raises(OSError, match="No space"):
            graphprune.save_masks(second, path)
        assert calls  # it did start writing
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    back = graphprune.load_masks(path)
    assert all(torch.equal(back[k], first[k]) for k in first)


def test_training_after_apply_updates_only_kept_weights():
    model, x = build("mlp")
    masks = _random_masks(model, seed=2)
    graphprune.apply_masks(model, masks=masks)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(x).sum().backward()
    g = model[0].weight_orig.grad
    assert g is not None and torch.all(g[~masks["0.weight"]] == 0) and g[masks["0.weight"]].abs().sum() > 0
    opt.step()
    assert torch.all(model[0].weight[~masks["0.weight"]] == 0)


def test_torchprune_naming_matches_torch():
    """graphprune._torchprune reads a parameter that torch.nn.utils.prune itself re-parametrised."""
    from torch.nn.utils import prune as tprune

    from graphprune import _torchprune

    lin = torch.nn.Linear(4, 3)
    assert _torchprune.pruned(lin, "weight") is None
    assert _torchprune.original(lin, "weight") is lin.weight
    tprune.l1_unstructured(lin, "weight", amount=0.5)
    orig, mask = _torchprune.pruned(lin, "weight")
    assert orig is lin.weight_orig and mask is lin.weight_mask
    assert _torchprune.original(lin, "weight") is lin.weight_orig
    assert _torchprune.original(lin, "bias") is lin.bias
    assert _torchprune.original(lin, "nothing", None) is None
    assert sorted(_torchprune.canonical(n) for n, _ in lin.named_parameters()) == ["bias", "weight"]


def test_torchprune_suffixes_are_written_once():
    """No module but graphprune/_torchprune.py spells torch.prune's '_orig' / '_mask' suffixes in code."""
    import ast
    import pathlib

    root = pathlib.Path(graphprune.__file__).parent
    known: set = set()
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel == "_torchprune.py" or rel in known:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in ("_orig", "_mask"):
                found.append(f"{rel}:{node.lineno}")
    assert not found, f"torch.prune's suffixes spelled outside graphprune/_torchprune.py: {found}"
