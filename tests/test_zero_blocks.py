"""All-zero and constant blocks (issue 22): every shipped sparsifier prunes them by a documented rule and warns.

A block with no non-zero available weight has nothing to rank: it keeps its budget of ``k`` edges chosen uniformly
at random from its own seed stream (the degree sparsifier keeps its own weight-free rule; the spectral default
samples among the edges between kept nodes first), with a RuntimeWarning naming the block. Budgets here come from
``allocation="uniform"`` so ``k`` is a hand count: ``round(density * rows * columns)``.
"""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from scipy import stats

import graphprune

ZERO_WARNING = r"Block '2' \(2\.weight\) has no non-zero available weight"

#: every shipped sparsifier and option set with its own code path for a block's mask
METHODS = [
    ("random", {}), ("magnitude", {}), ("degree", {}), ("degree", {"view": "channel"}), ("elementwise", {}),
    ("elementwise", {"power": 1, "reweight": True}), ("spectral", {}), ("spectral", {"width": "all"}),
    ("spectral", {"width": "all", "guard": True}), ("spectral", {"width": "all", "scope": "graph"}),
    ("spectral", {"width": "all", "sampling": "with_replacement", "reweight": True}),
    ("spectral", {"iterations": 2}), ("snip", {}), ("grasp", {}), ("synflow", {}),
    ("magnitude", {"comparison": "row"}), ("wanda", {}), ("ria", {}), ("sparsegpt", {}), ("flow", {}),
    ("flow", {"repair": "none", "criterion": "degree"}),
]
IDS = [f"{m}-{'-'.join(f'{k}={v}' for k, v in o.items())}" if o else m for m, o in METHODS]


def _net(fill=None):
    """An MLP 8 -> 16 -> 12 -> 4 whose middle Linear (block '2', 12 x 16 = 192 edges) is ``fill``-ed."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 12), torch.nn.ReLU(),
                              torch.nn.Linear(12, 4))
    if fill is not None:
        with torch.no_grad():
            net[2].weight.copy_(fill(net[2].weight.shape))
    return net, torch.randn(2, 8)


def _options(method, options, net):
    o = dict(options)
    if method in ("snip", "grasp"):
        g = torch.Generator().manual_seed(1)
        o.update(model=net, data=[(torch.randn(6, 8, generator=g), torch.randint(0, 4, (6,), generator=g))])
    if method == "synflow":
        o.update(model=net, input_shape=(8,))
    if method in ("wanda", "ria", "sparsegpt", "flow"):
        o.update(model=net, data=torch.randn(6, 8, generator=torch.Generator().manual_seed(1)))
    return o


def _run(G, method, options, seed, **kw):
    return graphprune.sparsify(G, method, sparsity=0.9, seed=seed, **options, **kw)


@pytest.mark.parametrize("method, options", METHODS, ids=IDS)
def test_zero_block_keeps_its_budget_warns_and_is_seeded(method, options):
    net, x = _net(torch.zeros)
    G = graphprune.from_model(net, x)
    o = _options(method, options, net)
    k = round(0.1 * 12 * 16)  # 19.2 -> 19, the uniform budget of the zero block
    # with rounds, each round keeps its own budget of what the round before kept
    said = r"\d+ of its \d+ edges" if options.get("iterations") else "19 of its 192 edges"
    with pytest.warns(RuntimeWarning, match=ZERO_WARNING + rf".*keeps its budget of {said}") as said:
        a = _run(G, method, o, seed=0, allocation="uniform")
    assert any(w.filename == __file__ for w in said), "the warning should point at the caller, not at graphprune"
    with pytest.warns(RuntimeWarning, match=ZERO_WARNING):
        b = _run(G, method, o, seed=0, allocation="uniform")
    with pytest.warns(RuntimeWarning, match=ZERO_WARNING):
        c = _run(G, method, o, seed=1, allocation="uniform")
    assert int(a["2.weight"].sum()) == k
    assert torch.equal(a["2.weight"], b["2.weight"]), "same seed, different mask"
    assert not torch.equal(a["2.weight"], c["2.weight"]), "the seed does not reach the zero block's rule"
    for name in ("0.weight", "4.weight"):  # the other blocks keep their own budgets
        assert int(a[name].sum()) == round(0.1 * a[name].numel())
    assert not G.is_masked


@pytest.mark.parametrize("method, options", METHODS, ids=IDS)
def test_zero_block_under_the_default_allocation(method, options):
    """Each sparsifier's own allocation (ERK for the spectral default, global for SNIP/GraSP/SynFlow) runs too."""
    net, x = _net(torch.zeros)
    G = graphprune.from_model(net, x)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        masks = _run(G, method, _options(method, options, net), seed=0)
    total = sum(int(m.sum()) for m in masks.values() if m.dim() == 2)
    assert total == pytest.approx(0.1 * (128 + 192 + 48), abs=2)
    zero = [w for w in caught if issubclass(w.category, RuntimeWarning) and "no non-zero" in str(w.message)]
    if int(masks["2.weight"].sum()) > 0:  # a choice was made among the zero block's edges: it was said
        assert zero and "'2'" in str(zero[0].message)


def test_zero_rule_is_uniform_chi_square():
    """The zero block's kept edges are a uniform k-subset: over seeds every edge is kept k/n of the time."""
    net = torch.nn.Sequential(torch.nn.Linear(4, 3, bias=False))
    with torch.no_grad():
        net[0].weight.zero_()
    G = graphprune.from_model(net, torch.randn(1, 4))
    runs, counts = 240, np.zeros(12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for seed in range(runs):
            counts += graphprune.sparsify(G, "magnitude", density=0.25, seed=seed)["0.weight"].reshape(-1).numpy()
    assert counts.sum() == runs * 3
    _, pval = stats.chisquare(counts, np.full(12, runs * 3 / 12))
    assert pval > 1e-3


def test_zero_rule_is_the_random_sparsifiers_choice():
    """One rule for every sparsifier: on a zero block, magnitude keeps the very edges random keeps (same seed)."""
    net, x = _net(torch.zeros)
    G = graphprune.from_model(net, x)
    with pytest.warns(RuntimeWarning, match=ZERO_WARNING):
        mag = _run(G, "magnitude", {}, seed=5)["2.weight"]
    with pytest.warns(RuntimeWarning, match=ZERO_WARNING):
        rnd = _run(G, "random", {}, seed=5)["2.weight"]
    assert torch.equal(mag, rnd)


def test_partly_masked_zero_block_and_available_edges():
    """Only the available edges count: non-zero weights all pruned already make the rest a zero block."""
    net, x = _net(torch.ones)
    G = graphprune.from_model(net, x)
    w = net[2].weight
    with torch.no_grad():
        w[:, 8:] = 0.0  # columns 8.. are zero, columns ..8 are pruned: nothing non-zero is available
    avail = torch.zeros(12, 16, dtype=torch.bool)
    avail[:, 8:] = True
    H = G.with_masks({"2.weight": avail})
    with pytest.warns(RuntimeWarning, match=ZERO_WARNING + r".*keeps its budget of 19 of its 96 edges"):
        m = graphprune.sparsify(H, "magnitude", sparsity=0.9, seed=0, allocation="uniform")["2.weight"]
    assert int(m.sum()) == 19 and not bool((m & ~avail).any())  # budget round(0.1 * 192), within the available


def test_zero_block_on_an_executor_matches_serial_and_warns_here():
    net, x = _net(torch.zeros)
    G = graphprune.from_model(net, x)
    for method, options in (("magnitude", {}), ("spectral", {"width": "all"}), ("elementwise", {"reweight": True})):
        with pytest.warns(RuntimeWarning, match=ZERO_WARNING):
            serial = _run(G, method, options, seed=3)
        with ThreadPoolExecutor(1) as ex, pytest.warns(RuntimeWarning, match=ZERO_WARNING):
            jobs = _run(G, method, options, seed=3, executor=ex)
        assert all(torch.equal(serial[k], jobs[k]) for k in serial), method


def test_spectral_default_samples_a_zero_block_between_kept_nodes():
    """When the default removes hidden nodes, the zero block's edges join nodes that kept edges on both sides."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(),
                              torch.nn.Linear(64, 10))
    with torch.no_grad():
        net[2].weight.zero_()
    G = graphprune.from_model(net, torch.randn(1, 32))
    sp = graphprune.get_sparsifier("spectral")(sparsity=0.98, seed=0)
    with pytest.warns(RuntimeWarning, match=ZERO_WARNING):
        masks = sp.sparsify(G)
    assert sp.width_["0"] < 0.25 and sp.width_["2"] < 0.25  # hidden nodes were removed (the case under test)
    m = masks["2.weight"]  # (out, in): rows are partition "2", columns partition "0"
    assert int(m.sum()) > 0
    alive_in = masks["0.weight"].any(1)  # hidden-1 nodes fed by the input layer
    alive_out = masks["4.weight"].any(0)  # hidden-2 nodes feeding the output layer
    rows, cols = m.nonzero(as_tuple=True)
    assert bool(alive_in[cols].all()) and bool(alive_out[rows].all())


def test_vision_transformer_zero_head_spectral_default():
    """torchvision's VisionTransformer initialises its head to zero: the default prunes it and says so."""
    VisionTransformer = pytest.importorskip("torchvision.models").VisionTransformer
    torch.manual_seed(0)
    vit = VisionTransformer(image_size=32, patch_size=16, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32,
                            num_classes=10)
    assert not bool(vit.heads.head.weight.any())  # the premise: a zero head
    G = graphprune.from_model(vit, torch.randn(1, 3, 32, 32))
    with pytest.warns(RuntimeWarning, match=r"Block 'heads\.head' \(heads\.head\.weight\) has no non-zero"):
        a = graphprune.sparsify(G, "spectral", sparsity=0.9, seed=0)
    with pytest.warns(RuntimeWarning, match=r"'heads\.head'"):
        b = graphprune.sparsify(G, "spectral", sparsity=0.9, seed=0)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert 0 < int(a["heads.head.weight"].sum()) < 160
    assert G.with_masks(a).density() == pytest.approx(0.1, abs=1e-3)


# -- constant blocks: every |w| equal --------------------------------------------------------------------------------
def _signed_constant(shape):
    g = torch.Generator().manual_seed(7)
    return 0.25 * (torch.randint(0, 2, shape, generator=g) * 2 - 1).float()


@pytest.mark.parametrize("method, options", METHODS, ids=IDS)
def test_constant_block(method, options):
    """All |w| equal (signs mixed): nothing divides by zero, exactly k edges, seeded; only magnitude, which has no
    ranking there, warns and draws uniformly."""
    net, x = _net(_signed_constant)
    G = graphprune.from_model(net, x)
    o = _options(method, options, net)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with np.errstate(all="raise"):  # a division by zero or an invalid value in numpy fails the test
            a = _run(G, method, o, seed=0, allocation="uniform")
            b = _run(G, method, o, seed=0, allocation="uniform")
    assert int(a["2.weight"].sum()) == round(0.1 * 192)
    assert torch.equal(a["2.weight"], b["2.weight"])
    said = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)
            and "Block '2'" in str(w.message)]
    if method == "magnitude":
        assert said and "the same |w| on every available edge (a constant block)" in said[0]
        # not the first 19 edges in parameter order (rows 0 and 1): spread over the block's rows
        assert int(a["2.weight"].any(1).sum()) > 2
    else:
        assert said == []
