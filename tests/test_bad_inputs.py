"""A systematic battery of bad inputs over the public surface (issue 9).

Every case asserts the error class, a substring naming the parameter or the value, and that nothing changed: the
model's state_dict, hooks and training flags, the graph's masks, and the global torch / numpy / random RNG states.
"""

from __future__ import annotations

import copy
import io
import os
import pickle
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

import graphprune
from graphprune import errors
from graphprune.errors import GraphPruneError, MaskError, ParameterError, UnknownSparsifierError
from graphprune.experiments import build_model, load_dataset, run_study
from graphprune.graph import Block, MultipartiteGraph, Partition
from graphprune.resistance import bipartite_resistance, laplacian_resistance
from graphprune.sparsify import check_sparsifier, get_sparsifier, register
from graphprune.sparsify.calibrated import CalibratedSparsifier
from graphprune.sparsify.check import SparsifierCheckError


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(20, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 12),
                         nn.ReLU(), nn.Linear(12, 5))


def _loader(n=2, features=20, classes=5):
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(8, features, generator=g), torch.randint(0, classes, (8,), generator=g)) for _ in range(n)]


@pytest.fixture()
def ctx(tmp_path):
    model = _net()
    model.train()
    model[1].eval()  # a mixed set of training flags, to see they are restored exactly
    x = torch.randn(4, 20, generator=torch.Generator().manual_seed(1))
    G = graphprune.from_model(model, x)
    G = G.with_masks({"0.weight": torch.rand(16, 20, generator=torch.Generator().manual_seed(2)) > 0.2})
    good = graphprune.sparsify(G, "random", sparsity=0.5, seed=0)
    return SimpleNamespace(model=model, x=x, G=G, good=good, tmp=tmp_path)


def _hooks(model):
    return [(n, len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for n, m in
            model.named_modules()]


def _state(c):
    return dict(
        sd={k: v.clone() for k, v in c.model.state_dict().items()},
        params=[n for n, _ in c.model.named_parameters()],
        hooks=_hooks(c.model),
        flags=[m.training for m in c.model.modules()],
        masks=c.G.masks,
        torch_rng=torch.get_rng_state(),
        np_rng=np.random.get_state(),
        py_rng=random.getstate(),
    )


def _assert_unchanged(before, after):
    assert before["sd"].keys() == after["sd"].keys(), "state_dict keys changed"
    for k in before["sd"]:
        assert torch.equal(before["sd"][k], after["sd"][k]), f"state_dict entry {k} changed"
    assert before["params"] == after["params"], "parameters changed"
    assert before["hooks"] == after["hooks"], "hooks changed"
    assert before["flags"] == after["flags"], "training flags changed"
    assert before["masks"].keys() == after["masks"].keys()
    for k in before["masks"]:
        assert torch.equal(before["masks"][k], after["masks"][k]), f"graph mask {k} changed"
    assert torch.equal(before["torch_rng"], after["torch_rng"]), "global torch RNG touched"
    b, a = before["np_rng"], after["np_rng"]
    assert b[0] == a[0] and np.array_equal(b[1], a[1]) and b[2:] == a[2:], "global numpy RNG touched"
    assert before["py_rng"] == after["py_rng"], "global random RNG touched"


def _other_model():
    with torch.random.fork_rng(devices=[]):  # the test itself must not touch the global RNG
        return nn.Sequential(nn.Linear(3, 3))


def _meta_model():
    with torch.device("meta"):
        return nn.Sequential(nn.Linear(3, 2))


def _meta_graph():
    w = torch.empty(3, 4, device="meta")
    return MultipartiteGraph([Partition("in", 4, "input"), Partition("out", 3, "output")],
                             [Block("fc", "in", "out", param="fc.weight", weight=w)])


def _nan_graph():
    w = torch.full((3, 4), float("nan"))
    return MultipartiteGraph([Partition("in", 4, "input"), Partition("out", 3, "output")],
                             [Block("fc", "in", "out", param="fc.weight", weight=w)])


def _sp(c, method="random", **kw):
    kw.setdefault("sparsity", 0.5)
    return graphprune.sparsify(c.G, method, **kw)


def _write(path, obj):
    torch.save(obj, path)
    return path


class _Evil:
    def __reduce__(self):
        return (open, ("/tmp/graphprune_evil_pickle_ran", "w"))


def _evil_file(c):
    path = c.tmp / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"format": "graphprune-masks", "version": 1, "masks": {"0.weight": _Evil()}}, f, protocol=2)
    return path


E = ParameterError
M = MaskError
CASES = [
    # -- sparsify: the shared parameters ---------------------------------------------------------------------
    ("sparsity>1", lambda c: _sp(c, sparsity=1.5), E, r"'sparsity' parameter of RandomSparsifier must be a float "
                                                     r"in \[0, 1\)\. Got 1\.5 instead"),
    ("sparsity<0", lambda c: _sp(c, sparsity=-0.1), E, "'sparsity'"),
    ("sparsity=1", lambda c: _sp(c, sparsity=1), E, "'sparsity'"),
    ("sparsity str", lambda c: _sp(c, sparsity="0.5"), E, r"'sparsity'.*Got '0\.5'"),
    ("sparsity bool", lambda c: _sp(c, sparsity=True), E, "'sparsity'"),
    ("sparsity nan", lambda c: _sp(c, sparsity=float("nan")), E, "'sparsity'"),
    ("density 0", lambda c: graphprune.sparsify(c.G, "random", density=0.0), E, r"'density'.*\(0, 1\]"),
    ("density>1", lambda c: graphprune.sparsify(c.G, "random", density=1.5), E, "'density'"),
    ("both", lambda c: _sp(c, density=0.5), E, "exactly one of 'sparsity' or 'density'"),
    ("neither", lambda c: graphprune.sparsify(c.G, "random"), E, "exactly one"),
    ("seed None", lambda c: _sp(c, seed=None), E, r"'seed' parameter.*Got None"),
    ("seed<0", lambda c: _sp(c, seed=-1), E, "'seed'"),
    ("seed str", lambda c: _sp(c, seed="zero"), E, "'seed'"),
    ("seed float", lambda c: _sp(c, seed=1.5), E, "'seed'"),
    ("seed bool", lambda c: _sp(c, seed=True), E, "'seed'"),
    ("unknown option", lambda c: _sp(c, bogus_option=1), E, r"Unknown option 'bogus_option'.*Known options:.*"
                                                             "allocation"),
    ("unknown spectral option", lambda c: _sp(c, "spectral", views="rolled"), E, r"'views'.*view"),
    ("allocation name", lambda c: _sp(c, allocation="erdos"), E, r"'allocation'.*'uniform', 'erk', 'igq', 'global'"),
    ("allocation int key", lambda c: _sp(c, allocation={0: 0.5}), E, "'allocation'"),
    ("allocation density", lambda c: _sp(c, allocation={"0.weight": 1.5}), E, "'allocation'"),
    ("allocation unmatched", lambda c: _sp(c, allocation={"nope.*": 0.5}), E, r"'nope\.\*'.*'allocation'.*matches "
                                                                                "no prunable parameter"),
    ("allocation list", lambda c: _sp(c, allocation=["0.weight"]), E, "'allocation'"),
    ("keep_dense None", lambda c: _sp(c, keep_dense=None), E, "'keep_dense'"),
    ("keep_dense str", lambda c: _sp(c, keep_dense="0.weight"), E, r"'keep_dense'.*list of str"),
    ("keep_dense unmatched", lambda c: _sp(c, keep_dense=["fc9.*"]), E, r"'fc9\.\*'.*'keep_dense'"),
    ("keep_dense int", lambda c: _sp(c, keep_dense=[1]), E, "'keep_dense'"),
    ("progress str", lambda c: _sp(c, progress="yes"), E, "'progress'"),
    ("method int", lambda c: graphprune.sparsify(c.G, 5, sparsity=0.5), E, "'method' parameter of sparsify"),
    ("method unknown", lambda c: graphprune.sparsify(c.G, "nope", sparsity=0.5), UnknownSparsifierError,
     "Unknown sparsifier 'nope'"),
    ("instance + options", lambda c: graphprune.sparsify(c.G, get_sparsifier("random")(sparsity=0.5), sparsity=0.1),
     E, "instance"),
    ("graph str", lambda c: graphprune.sparsify("graph", "random", sparsity=0.5), E,
     r"'graph' parameter of RandomSparsifier\.sparsify must be a MultipartiteGraph\. Got 'graph' \(str\)"),
    ("graph model", lambda c: graphprune.sparsify(c.model, "random", sparsity=0.5), E, "from_model"),
    ("degree global", lambda c: _sp(c, "degree", allocation="global"), E, "cannot be 'global'"),
    ("degree view", lambda c: _sp(c, "degree", view="diagonal"), E, "'view' parameter of DegreeSparsifier"),
    ("meta weights", lambda c: graphprune.sparsify(_meta_graph(), "random", sparsity=0.5), E, "meta device"),
    ("nan weights", lambda c: graphprune.sparsify(_nan_graph(), "magnitude", sparsity=0.5), E, "NaN or inf"),
    # -- spectral -------------------------------------------------------------------------------------------
    ("spectral view", lambda c: _sp(c, "spectral", view="unrolled"), E, r"'view' parameter of SpectralSparsifier.*"
                                                                         "'channel', 'rolled'"),
    ("spectral scope", lambda c: _sp(c, "spectral", scope="layer"), E, "'scope'"),
    ("spectral resistance", lambda c: _sp(c, "spectral", resistance="pinv"), E, "'resistance'"),
    ("spectral jl per block", lambda c: _sp(c, "spectral", resistance="jl"), E, "only with scope='graph'"),
    ("spectral sampling", lambda c: _sp(c, "spectral", sampling="poisson"), E, "'sampling'"),
    ("spectral guard str", lambda c: _sp(c, "spectral", guard="no"), E, r"'guard'.*a bool.*Got 'no'"),
    ("spectral reweight int", lambda c: _sp(c, "spectral", reweight=1), E, "'reweight'"),
    ("spectral dtype f16", lambda c: _sp(c, "spectral", dtype=torch.float16), E, "'dtype'"),
    ("spectral dtype str", lambda c: _sp(c, "spectral", dtype="float64"), E, r"'dtype'.*torch\.float32"),
    ("spectral width", lambda c: _sp(c, "spectral", width="half"), E, r"'width'.*'auto', 'all'.*Got 'half'"),
    ("spectral graph scope needs all", lambda c: _sp(c, "spectral", scope="graph"), E,
     r"'scope' parameter of SpectralSparsifier can be 'graph' only with width='all'"),
    ("spectral reweight needs all", lambda c: _sp(c, "spectral", reweight=True), E, r"'reweight'.*width='all'"),
    ("spectral rolled needs all", lambda c: _sp(c, "spectral", view="rolled"), E, r"'view'.*width='all'"),
    ("spectral draws need all", lambda c: _sp(c, "spectral", sampling="with_replacement"), E,
     r"'sampling'.*width='all'"),
    ("spectral global needs all", lambda c: _sp(c, "spectral", allocation="global"), E,
     r"'allocation'.*width='all'"),
    ("spectral nodes needs auto", lambda c: _sp(c, "spectral", width="all", allocation="nodes"), E,
     r"'nodes' only with width='auto'"),
    ("spectral iterations 0", lambda c: _sp(c, "spectral", iterations=0), E, r"'iterations'.*int in \[1, inf\)"),
    ("spectral edges per node 0", lambda c: _sp(c, "spectral", edges_per_node=0), E, "'edges_per_node'"),
    ("spectral min nodes float", lambda c: _sp(c, "spectral", min_nodes=2.5), E, "'min_nodes'"),
    ("spectral positive paths needs auto", lambda c: _sp(c, "spectral", width="all", positive_paths=True), E,
     r"'positive_paths' parameter of SpectralSparsifier can be True only with width='auto'"),
    ("spectral positive paths str", lambda c: _sp(c, "spectral", positive_paths="yes"), E, "'positive_paths'"),
    # -- SNIP, GraSP, SynFlow -------------------------------------------------------------------------------
    ("snip no data", lambda c: _sp(c, "snip", model=c.model), E, "'data' parameter of SNIPSparsifier"),
    ("snip data ints", lambda c: _sp(c, "snip", model=c.model, data=[1, 2]), E, r"must yield \(input, label\)"),
    ("snip data empty", lambda c: _sp(c, "snip", model=c.model, data=[]), E, "yielded no batch"),
    ("snip data str", lambda c: _sp(c, "snip", model=c.model, data="mnist1d"), E, "'data'"),
    ("snip no model", lambda c: _sp(c, "snip", data=_loader()), E, "'model' parameter of SNIPSparsifier"),
    ("snip model str", lambda c: _sp(c, "snip", model="net", data=_loader()), E, "'model'"),
    ("snip other model", lambda c: _sp(c, "snip", model=_other_model(), data=_loader()), E,
     "must be the model the graph was exported from"),
    ("snip batches 0", lambda c: _sp(c, "snip", model=c.model, data=_loader(), batches=0), E, "'batches'"),
    ("snip mode", lambda c: _sp(c, "snip", model=c.model, data=_loader(), mode="test"), E,
     r"'mode'.*'train', 'eval'"),
    ("snip wrong features", lambda c: _sp(c, "snip", model=c.model, data=_loader(features=7)), E,
     r"'data'.*does not fit the model.*mat1 and mat2"),
    ("snip float labels", lambda c: _sp(c, "snip", model=c.model,
                                        data=[(torch.ones(8, 20), torch.ones(8, 3))]), E, "labels"),
    ("grasp temperature", lambda c: _sp(c, "grasp", model=c.model, data=_loader(), temperature=0), E,
     "'temperature'"),
    ("grasp no data", lambda c: _sp(c, "grasp", model=c.model), E, "'data' parameter of GraSPSparsifier"),
    ("synflow wrong shape", lambda c: _sp(c, "synflow", model=c.model, input_shape=(3,)), E,
     r"'input_shape'.*does not fit"),
    ("synflow iterations", lambda c: _sp(c, "synflow", model=c.model, input_shape=(20,), iterations=0), E,
     "'iterations'"),
    ("synflow no shape", lambda c: _sp(c, "synflow", model=c.model), E, "'input_shape'"),
    ("synflow negative shape", lambda c: _sp(c, "synflow", model=c.model, input_shape=(-1,)), E, "'input_shape'"),
    # -- with_masks -----------------------------------------------------------------------------------------
    ("with_masks None value", lambda c: c.G.with_masks({"4.weight": None}), M, r"'4\.weight'.*torch\.Tensor"),
    ("with_masks unknown", lambda c: c.G.with_masks({"nope": torch.ones(2, dtype=torch.bool)}), M,
     "backs no block"),
    ("with_masks int key", lambda c: c.G.with_masks({0: c.good["0.weight"]}), M, "keyed by parameter names"),
    ("with_masks shape", lambda c: c.G.with_masks({"0.weight": torch.ones(3, 3, dtype=torch.bool)}), M,
     r"shape \(3, 3\).*\(16, 20\)"),
    ("with_masks float", lambda c: c.G.with_masks({"0.weight": torch.full((16, 20), 0.5)}), M, "only 0 and 1"),
    ("with_masks int 2", lambda c: c.G.with_masks({"0.weight": torch.full((16, 20), 2)}), M, "only 0 and 1"),
    ("with_masks nan", lambda c: c.G.with_masks({"0.weight": torch.full((16, 20), float("nan"))}), M,
     "only 0 and 1"),
    ("with_masks numpy", lambda c: c.G.with_masks({"0.weight": np.ones((16, 20), bool)}), M, "torch.Tensor"),
    ("with_masks not dict", lambda c: c.G.with_masks(5), M, "dict of parameter name"),
    ("with_masks list", lambda c: c.G.with_masks([c.good["0.weight"]]), M, "dict"),
    ("with_masks combine", lambda c: c.G.with_masks(c.good, combine="yes"), E, "'combine'"),
    # -- apply_masks ----------------------------------------------------------------------------------------
    ("apply model str", lambda c: graphprune.apply_masks("model", masks=c.good), E,
     "'model' parameter of apply_masks"),
    ("apply int key", lambda c: graphprune.apply_masks(c.model, masks={0: c.good["0.weight"]}), M,
     "keyed by parameter names"),
    ("apply unknown", lambda c: graphprune.apply_masks(c.model, masks={**c.good, "9.weight": c.good["0.weight"]}),
     M, r"'9\.weight'.*no such parameter"),
    ("apply shape", lambda c: graphprune.apply_masks(c.model, masks={"0.weight": torch.ones(2, 2).bool()}), M,
     "shape"),
    ("apply int 2", lambda c: graphprune.apply_masks(c.model, masks={"0.weight": torch.full((16, 20), 2)}), M,
     "only 0 and 1"),
    ("apply list", lambda c: graphprune.apply_masks(c.model, masks=[1, 2]), M, "dict of parameter name"),
    ("apply nothing", lambda c: graphprune.apply_masks(c.model), E, "needs 'masks' or a 'graph'"),
    ("apply graph str", lambda c: graphprune.apply_masks(c.model, "G"), E, "'graph' parameter of apply_masks"),
    ("apply dict as graph", lambda c: graphprune.apply_masks(c.model, c.good), E, "pass masks by keyword"),
    ("apply scales shape", lambda c: graphprune.apply_masks(c.model, masks=c.good,
                                                            scales={"0.weight": torch.ones(3)}), M, "scale"),
    ("apply scales nan", lambda c: graphprune.apply_masks(
        c.model, masks=c.good, scales={"0.weight": torch.full((16, 20), float("nan"))}), M, "finite"),
    ("apply scales int", lambda c: graphprune.apply_masks(
        c.model, masks=c.good, scales={"0.weight": torch.ones(16, 20, dtype=torch.int64)}), M, "floating"),
    ("apply scales bad key", lambda c: graphprune.apply_masks(
        c.model, masks=c.good, scales={"x.weight": torch.ones(16, 20)}), M, "no such parameter"),
    ("make_permanent str", lambda c: graphprune.make_permanent("model"), E, "'model' parameter of make_permanent"),
    # -- save_masks / load_masks ----------------------------------------------------------------------------
    ("save not dict", lambda c: graphprune.save_masks([1], c.tmp / "m.pt"), M, "dict"),
    ("save float", lambda c: graphprune.save_masks({"0.weight": torch.ones(2)}, c.tmp / "m.pt"), M,
     r"dtype torch\.bool.*mask\.bool\(\)"),
    ("save int key", lambda c: graphprune.save_masks({0: torch.ones(2).bool()}, c.tmp / "m.pt"), M,
     "keyed by parameter names"),
    ("save none value", lambda c: graphprune.save_masks({"a": None}, c.tmp / "m.pt"), M, "torch.Tensor"),
    ("save missing folder", lambda c: graphprune.save_masks(c.good, c.tmp / "no" / "such" / "m.pt"), E,
     "does not exist"),
    ("save path int", lambda c: graphprune.save_masks(c.good, 5), E, "'path' parameter of save_masks"),
    ("load missing", lambda c: graphprune.load_masks(c.tmp / "nothing.pt"), M, "No mask file"),
    ("load path None", lambda c: graphprune.load_masks(None), E, "'path' parameter of load_masks"),
    ("load text file", lambda c: graphprune.load_masks(_text(c)), M, "not a mask file readable"),
    ("load no masks entry", lambda c: graphprune.load_masks(_write(c.tmp / "a.pt", {
        "format": "graphprune-masks", "version": 1})), M, "no 'masks' entry"),
    ("load wrong format", lambda c: graphprune.load_masks(_write(c.tmp / "b.pt", {
        "format": "other", "version": 1, "masks": {}})), M, "format 'other'"),
    ("load wrong version", lambda c: graphprune.load_masks(_write(c.tmp / "c.pt", {
        "format": "graphprune-masks", "version": 99, "masks": {}})), M, "version 99"),
    ("load int keys", lambda c: graphprune.load_masks(_write(c.tmp / "d.pt", {0: torch.ones(2).bool()})), M,
     "keys must be parameter names"),
    ("load float masks", lambda c: graphprune.load_masks(_write(c.tmp / "e.pt", {"a": torch.ones(2)})), M,
     "must be a bool tensor"),
    ("load a list", lambda c: graphprune.load_masks(_write(c.tmp / "f.pt", [torch.ones(2).bool()])), M,
     "not a mask file"),
    ("load masks not dict", lambda c: graphprune.load_masks(_write(c.tmp / "g.pt", {
        "format": "graphprune-masks", "version": 1, "masks": [1]})), M, "not a dict"),
    ("load evil pickle", lambda c: graphprune.load_masks(_evil_file(c)), M, "weights_only"),
    # -- effective resistance -------------------------------------------------------------------------------
    ("R dtype str", lambda c: graphprune.effective_resistance(c.G, "0", dtype="float64"), E,
     r"'dtype' parameter of effective_resistance.*Got 'float64'"),
    ("R dtype int", lambda c: graphprune.effective_resistance(c.G, "0", dtype=torch.int64), E, "'dtype'"),
    ("R jl eps 0", lambda c: graphprune.effective_resistance(c.G, method="jl", eps=0), E, "'eps'"),
    ("R jl dim", lambda c: graphprune.effective_resistance(c.G, method="jl", jl_dim=-5), E, "'jl_dim'"),
    ("R jl seed None", lambda c: graphprune.effective_resistance(c.G, method="jl", seed=None), E, "'seed'"),
    ("R method", lambda c: graphprune.effective_resistance(c.G, "0", method="pinv"), E, "'method'"),
    ("R view", lambda c: graphprune.effective_resistance(c.G, "0", view="bogus"), E, "'view'"),
    ("R bogus kwarg", lambda c: graphprune.effective_resistance(c.G, "0", bogus=1), E, "Unknown option 'bogus'"),
    ("R str", lambda c: graphprune.effective_resistance("layer"), E,
     r"'obj' parameter of effective_resistance must be a MultipartiteGraph or a 2-D biadjacency.*Got 'layer' "
     r"\(str\) instead\. Build a graph with graphprune\.from_model"),
    ("R None", lambda c: graphprune.effective_resistance(None), E, r"'obj'.*Got None \(NoneType\)"),
    ("R model", lambda c: graphprune.effective_resistance(c.model), E, r"'obj'.*Got a Sequential instead"),
    ("R ragged", lambda c: graphprune.effective_resistance([[1.0, 2.0], [3.0]]), E, r"'obj'.*Got \[\[1\.0"),
    ("R complex", lambda c: graphprune.effective_resistance(np.ones((2, 2), complex)), E, r"'obj'.*ndarray"),
    ("R scalar", lambda c: graphprune.effective_resistance(5), E, r"'obj'.*Got 5 \(int\) instead"),
    ("R 1-D", lambda c: graphprune.effective_resistance([1.0, 2.0]), E, r"'obj'.*1-D array of shape \(2,\)"),
    ("R unknown block", lambda c: graphprune.effective_resistance(c.G, "nope"), GraphPruneError, "No block"),
    ("R negative B", lambda c: graphprune.effective_resistance(torch.tensor([[-1.0, 2.0]])), E, "negative weights"),
    ("R jl on B", lambda c: graphprune.effective_resistance(torch.ones(2, 2), method="jl"), E, "whole graphs"),
    ("bipartite dtype", lambda c: bipartite_resistance(torch.ones(2, 2), dtype=torch.int32), E, "'dtype'"),
    ("bipartite backend", lambda c: bipartite_resistance(torch.ones(2, 2), backend="cupy"), E, "'backend'"),
    ("laplacian solver", lambda c: laplacian_resistance(np.eye(2), ([0], [1]), method="jl", solver="qr"), E,
     "'solver'"),
    ("laplacian tol", lambda c: laplacian_resistance(np.eye(2), ([0], [1]), tol=0), E, "'tol'"),
    ("laplacian method", lambda c: laplacian_resistance(np.eye(2), ([0], [1]), method="auto"), E, "'method'"),
    # -- registry and conformance ---------------------------------------------------------------------------
    ("check non sparsifier", lambda c: check_sparsifier(5), SparsifierCheckError, "neither a Sparsifier"),
    ("check graphs str", lambda c: check_sparsifier(get_sparsifier("random"), graphs="G"), E, "'graphs'"),
    ("get_sparsifier int", lambda c: get_sparsifier(5), E, "must be a str"),
    ("register int", lambda c: register(int), E, "Sparsifier subclass"),
    ("register duplicate", lambda c: register(type("R2", (get_sparsifier("random"),), {"name": "random"})), E,
     "already registered"),
    ("load_dataset", lambda c: load_dataset("imagenet"), E,
     r"'dataset' parameter of load_dataset.*'mnist1d', 'synthetic'"),
    ("run_study model", lambda c: run_study("vgg", "synthetic", out_dir=str(c.tmp)), E,
     "'model' parameter of run_study"),
    ("run_study dataset", lambda c: run_study("mlp", "cifar", out_dir=str(c.tmp)), E, "'dataset'"),
    ("run_study jobs", lambda c: run_study("mlp", "synthetic", jobs=0, out_dir=str(c.tmp)), E, "'jobs'"),
    ("run_study methods", lambda c: run_study("mlp", "synthetic", methods=["nope"], out_dir=str(c.tmp)), E,
     r"'methods'.*\['nope'\]"),
    ("run_study compressions", lambda c: run_study("mlp", "synthetic", compressions=[0.5], out_dir=str(c.tmp)),
     E, "'compressions'"),
    ("run_study seeds", lambda c: run_study("mlp", "synthetic", seeds=[None], out_dir=str(c.tmp)), E, "'seeds'"),
    ("run_study schedule", lambda c: run_study("mlp", "synthetic", schedule=40, out_dir=str(c.tmp)), E,
     "'schedule'"),
    ("build_model name", lambda c: build_model("vgg"), E, "'name' parameter of build_model"),
    ("build_model features", lambda c: build_model("mlp", features=0), E, "'features'"),
    # -- from_model ------------------------------------------------------------------------------------------
    ("from_model str model", lambda c: graphprune.from_model("net", c.x), E, "'model' parameter of from_model"),
    ("from_model leaf_modules int", lambda c: graphprune.from_model(c.model, c.x, leaf_modules=5), E,
     "'leaf_modules' parameter of from_model"),
    ("from_model leaf_modules name", lambda c: graphprune.from_model(c.model, c.x, leaf_modules=("bogus",)), E,
     "'leaf_modules'"),
    ("from_model tracer", lambda c: graphprune.from_model(c.model, c.x, tracer="bogus"), E,
     "'tracer' parameter of from_model"),
    ("from_model wrong shape", lambda c: graphprune.from_model(c.model, torch.ones(4, 7)), errors.TracingError,
     "mat1 and mat2"),
    ("from_model meta", lambda c: graphprune.from_model(_meta_model(), torch.ones(2, 3)), E, "meta device"),
    ("from_model no params", lambda c: graphprune.from_model(nn.ReLU(), c.x), E, "no parameters"),
    ("prune unknown option", lambda c: graphprune.prune(c.model, c.x, "random", sparsity=0.5, bogus=1), E,
     r"Unknown option 'bogus' for prune\(\) with RandomSparsifier"),
    ("prune method int", lambda c: graphprune.prune(c.model, c.x, 5, sparsity=0.5), E, "'method' parameter of prune"),
    ("prune permanent str", lambda c: graphprune.prune(c.model, c.x, "random", sparsity=0.5, permanent="yes"), E,
     "'permanent'"),
    ("prune unmatched keep_dense", lambda c: graphprune.prune(c.model, c.x, "random", sparsity=0.5, permanent=True,
                                                              keep_dense=["nope"], progress=False), E,
     "matches no prunable parameter"),
    ("prune sparsity", lambda c: graphprune.prune(c.model, c.x, "random", sparsity=2.0), E, "'sparsity'"),
    ("sparsify executor", lambda c: _sp(c, executor="dask"), E, "'executor' parameter of RandomSparsifier"),
    # -- graph methods --------------------------------------------------------------------------------------
    ("G.block", lambda c: c.G.block("nope"), GraphPruneError, "No block named 'nope'"),
    ("G.partition", lambda c: c.G.partition("nope"), GraphPruneError, "No partition named 'nope'"),
    ("G.degrees", lambda c: c.G.degrees("sideways"), E, "'direction'"),
    ("G.biadjacency view", lambda c: c.G.biadjacency("0", view="bogus"), E, "'view'"),
    ("G.biadjacency format", lambda c: c.G.biadjacency("0", format="dense"), E, "'format'"),
    ("G.param_mask", lambda c: c.G.param_mask("nope"), M, "No parameter named 'nope'"),
]


def _text(c):
    path = c.tmp / "notes.txt"
    path.write_text("not a tensor file")
    return path


def test_battery_is_large_and_distinct():
    assert len(CASES) >= 100
    assert len({name for name, *_ in CASES}) == len(CASES)


@pytest.mark.parametrize("name, fn, exc, match", CASES, ids=[c[0] for c in CASES])
def test_bad_input(ctx, name, fn, exc, match):
    if os.path.exists("/tmp/graphprune_evil_pickle_ran"):
        os.remove("/tmp/graphprune_evil_pickle_ran")
    before = _state(ctx)
    with pytest.raises(exc, match=match) as info:
        fn(ctx)
    assert isinstance(info.value, GraphPruneError), f"{type(info.value).__name__} is not a GraphPruneError"
    _assert_unchanged(before, _state(ctx))
    assert not os.path.exists("/tmp/graphprune_evil_pickle_ran"), "a code-executing pickle ran"


# -- fault injection: a write failing part-way rolls everything back ---------------------------------------------
@pytest.mark.parametrize("with_scales", [False, True])
def test_apply_masks_is_all_or_nothing(ctx, monkeypatch, with_scales):
    from torch.nn.utils import prune

    real = prune.custom_from_mask
    calls = {"n": 0}

    def flaky(module, name, mask):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk on fire")
        return real(module, name, mask)

    monkeypatch.setattr(prune, "custom_from_mask", flaky)
    scales = {k: torch.full(v.shape, 3.0) for k, v in ctx.good.items()} if with_scales else None
    before = _state(ctx)
    with pytest.raises(RuntimeError, match="disk on fire"):
        graphprune.apply_masks(ctx.model, masks=ctx.good, scales=scales)
    assert calls["n"] == 2
    _assert_unchanged(before, _state(ctx))
    assert not any(n.endswith("_orig") for n, _ in ctx.model.named_parameters())
    assert not any(hasattr(m, "weight_mask") for m in ctx.model.modules())
    monkeypatch.setattr(prune, "custom_from_mask", real)
    graphprune.apply_masks(ctx.model, masks=ctx.good, scales=scales)  # and it still works afterwards
    w0 = ctx.model[0].weight
    expect = before["sd"]["0.weight"] * ctx.good["0.weight"] * (3.0 if with_scales else 1.0)
    assert torch.equal(w0.detach(), expect)


def test_apply_masks_roll_back_on_an_already_pruned_model(ctx, monkeypatch):
    from torch.nn.utils import prune

    graphprune.apply_masks(ctx.model, masks=ctx.good)
    before = _state(ctx)
    orig = {n: p.clone() for n, p in ctx.model.named_parameters()}
    monkeypatch.setattr(prune, "custom_from_mask", lambda *a, **k: (_ for _ in ()).throw(OSError("nope")))
    with pytest.raises(OSError):
        graphprune.apply_masks(ctx.model, masks=ctx.good)
    _assert_unchanged(before, _state(ctx))
    assert all(torch.equal(p, orig[n]) for n, p in ctx.model.named_parameters())


# -- the CLI: exit 2, one line on stderr, no traceback -----------------------------------------------------------
def _masks_file_without_entry(tmp):
    path = tmp / "nomasks.pt"
    torch.save({"format": "graphprune-masks", "version": 1}, path)
    return str(path)


CLI = [
    ("snip without data", ["prune", "graphprune.experiments.models:MLP", "--input-shape", "1,40", "--sparsifier",
                           "snip"], "data-dependent: pass --data"),
    ("bad sparsity", ["prune", "resnet18", "--sparsity", "1.5"], "sparsity must be in [0, 1)"),
    ("unknown sparsifier", ["prune", "resnet18", "--sparsifier", "nope"], "invalid choice"),
    ("unknown allocation", ["prune", "resnet18", "--allocation", "erdos"], "invalid choice"),
    ("width for random", ["prune", "graphprune.experiments.models:MLP", "--input-shape", "1,40", "--sparsifier",
                          "random", "--width", "all"], "--width applies to the spectral sparsifier only"),
    ("unknown width", ["prune", "resnet18", "--width", "half"], "invalid choice"),
    ("positive paths for random", ["prune", "graphprune.experiments.models:MLP", "--input-shape", "1,40",
                                   "--sparsifier", "random", "--positive-paths"],
     "--positive-paths applies to the spectral sparsifier only"),
    ("masks without entry", ["report", "graphprune.experiments.models:MLP", "--input-shape", "1,40", "--masks",
                             "<NOMASKS>", "--no-spectral"], "no 'masks' entry"),
    ("unknown model", ["export", "no_such_model_xyz"], "unknown torchvision model"),
    ("unknown data", ["prune", "graphprune.experiments.models:MLP", "--input-shape", "1,40", "--sparsifier", "snip",
                      "--data", "imagenet"], "unknown --data 'imagenet'"),
    ("wrong input shape", ["export", "graphprune.experiments.models:MLP", "--input-shape", "1,7"],
     "mat1 and mat2 shapes cannot be multiplied"),
    ("bad factory", ["export", "no_such_pkg_xyz:f", "--input-shape", "1,4"], "cannot load model factory"),
    ("bad shape text", ["export", "resnet18", "--input-shape", "a,b"], "invalid shape"),
    ("unknown dataset", ["experiment", "--dataset", "imagenet"], "invalid choice"),
    ("missing weights", ["export", "resnet18", "--weights", "/no/such/file.pt"], "weights file not found"),
    ("bad report ext", ["report", "graphprune.experiments.models:MLP", "--input-shape", "1,40", "--no-spectral",
                        "--out", "r.txt"], "must end in"),
]


@pytest.mark.parametrize("name, argv, needle", CLI, ids=[c[0] for c in CLI])
def test_cli_errors_are_one_line(tmp_path, capsys, monkeypatch, name, argv, needle):
    from graphprune.cli import main

    monkeypatch.chdir(tmp_path)
    argv = [_masks_file_without_entry(tmp_path) if a == "<NOMASKS>" else a for a in argv]
    rc = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert needle in lines[0]


def test_cli_any_exception_is_one_line(capsys, monkeypatch):
    """An unexpected exception deep inside (here a KeyError) is still one line and exit 2."""
    from graphprune import cli

    monkeypatch.setattr(cli, "load_model", lambda *a, **k: (_ for _ in ()).throw(KeyError("boom\nsecond line")))
    rc = cli.main(["export", "resnet18"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "KeyError" in err[0] and "boom" in err[0]


def test_cli_runs_data_dependent_sparsifiers(tmp_path, monkeypatch):
    from graphprune.cli import main

    monkeypatch.chdir(tmp_path)
    for method, extra in (("snip", ["--data", "synthetic"]), ("grasp", ["--data", "synthetic"]), ("synflow", [])):
        out = str(tmp_path / f"{method}.pt")
        rc = main(["prune", "graphprune.experiments.models:MLP", "--input-shape", "1,40", "--sparsifier", method,
                   "--sparsity", "0.8", "--out", out, "--quiet", *extra])
        assert rc == 0
        masks = graphprune.load_masks(out)
        total = sum(m.numel() for m in masks.values())
        assert abs(sum(int(m.sum()) for m in masks.values()) - 0.2 * total) <= 1


def test_cli_parser_choices_come_from_the_shared_lists():
    from graphprune import _validation as V
    from graphprune.cli import build_parser

    p = build_parser()
    sub = next(a for a in p._actions if a.dest == "command").choices
    alloc = next(a for a in sub["prune"]._actions if a.dest == "allocation")
    data = next(a for a in sub["experiment"]._actions if a.dest == "dataset")
    assert tuple(alloc.choices) == V.ALLOCATIONS and tuple(data.choices) == V.DATASETS


# -- seeds --------------------------------------------------------------------------------------------------------
def test_generator_seeds_are_honoured_everywhere(ctx):
    """The same Generator state gives the same masks; the JL engine and scope='graph' take the caller's seed."""
    for method, opts in (("random", {}), ("spectral", {}),
                         ("spectral", {"width": "all", "scope": "graph", "resistance": "jl"}),
                         ("snip", {"model": ctx.model, "data": _loader()})):
        a = _sp(ctx, method, seed=torch.Generator().manual_seed(7), **opts)
        b = _sp(ctx, method, seed=torch.Generator().manual_seed(7), **opts)
        n = _sp(ctx, method, seed=np.random.default_rng(7), **opts)
        n2 = _sp(ctx, method, seed=np.random.default_rng(7), **opts)
        assert all(torch.equal(a[k], b[k]) and torch.equal(n[k], n2[k]) for k in a), method
    R1 = graphprune.effective_resistance(ctx.G, method="jl", seed=1)
    R2 = graphprune.effective_resistance(ctx.G, method="jl", seed=2)
    R1b = graphprune.effective_resistance(ctx.G, method="jl", seed=1)
    assert all(np.array_equal(R1[k].numpy(), R1b[k].numpy(), equal_nan=True) for k in R1)
    assert any(not np.array_equal(R1[k].numpy(), R2[k].numpy(), equal_nan=True) for k in R1)
    g1 = _sp(ctx, "spectral", width="all", scope="graph", resistance="jl", seed=1, sparsity=0.7)
    g2 = _sp(ctx, "spectral", width="all", scope="graph", resistance="jl", seed=2, sparsity=0.7)
    assert any(not torch.equal(g1[k], g2[k]) for k in g1)


# -- sparsifier contract ------------------------------------------------------------------------------------------
def test_repr_shows_constructor_parameters_only(ctx):
    sp = get_sparsifier("spectral")(sparsity=0.5, width="all", reweight=True)
    before = repr(sp)
    sp.sparsify(ctx.G)
    assert repr(sp) == before and "scales_" not in before and sp.scales_ and "width_" not in before
    assert before.startswith("SpectralSparsifier(sparsity=0.5, width='all'") and "reweight=True" in before
    snip = get_sparsifier("snip")(sparsity=0.5, model=ctx.model, data=_loader())
    assert "model=<Sequential>" in repr(snip) and "data=<list of 2>" in repr(snip)


def test_check_sparsifier_runs_on_every_shipped_sparsifier(ctx):
    G = graphprune.from_model(ctx.model, ctx.x)
    for name in graphprune.available_sparsifiers():
        cls = get_sparsifier(name)
        if name in ("snip", "grasp") or issubclass(cls, CalibratedSparsifier):
            check_sparsifier(cls, graphs=[G], options={"model": ctx.model, "data": _loader()},
                             sparsities=(0.5,))
        elif name == "synflow":
            check_sparsifier(cls(sparsity=0.5, model=ctx.model, input_shape=(20,)), graphs=[G], sparsities=(0.5,))
        else:
            check_sparsifier(cls)


def test_check_sparsifier_catches_a_constructor_that_validates_or_a_sparsify_that_changes_parameters():
    base = get_sparsifier("random")

    class Eager(base):
        name = None

        def __init__(self, sparsity=None, **kw):
            super().__init__(sparsity, **kw)
            if not 0 <= sparsity < 1:
                raise ValueError("bad")

    class Mutating(base):
        name = None

        def prepare(self, graph):
            self.keep_dense = ["0.weight"]

    class Sneaky(base):
        name = None

        def __init__(self, sparsity=None, **kw):
            super().__init__(sparsity, **kw)
            self.cache = {}

    with pytest.raises(SparsifierCheckError, match="constructor must only store parameters"):
        check_sparsifier(Eager)
    with pytest.raises(SparsifierCheckError, match="must not change the sparsifier's parameters"):
        check_sparsifier(Mutating)
    with pytest.raises(SparsifierCheckError, match=r"set only its parameters.*cache"):
        check_sparsifier(Sneaky)


def test_entry_point_reusing_a_builtin_name_warns(monkeypatch):
    from graphprune.sparsify import registry

    class EP:
        name, value = "spectral", "evil_pkg:Spectral"

        def load(self):
            raise AssertionError("must not be loaded")

    monkeypatch.setattr(registry, "_loaded", False)
    monkeypatch.setattr("importlib.metadata.entry_points", lambda group=None: [EP()])
    with pytest.warns(RuntimeWarning, match="'spectral'.*already taken"):
        registry.available_sparsifiers()
    assert get_sparsifier("spectral").__module__ == "graphprune.sparsify.spectral"


def test_snip_eval_mode_freezes_batchnorm(ctx):
    """mode='eval' scores with BatchNorm running statistics (a different loss), mode='train' with batch ones."""
    data = _loader(1)
    tr = get_sparsifier("snip")(sparsity=0.5, model=ctx.model, data=data, mode="train")
    ev = get_sparsifier("snip")(sparsity=0.5, model=ctx.model, data=data, mode="eval")
    G = graphprune.from_model(ctx.model, ctx.x)
    tr.prepare(G)
    ev.prepare(G)
    # reference: |dL/dw * w| computed by hand on a copy in each mode
    for sp, mode in ((tr, True), (ev, False)):
        m = copy.deepcopy(ctx.model).train(mode)
        x, y = data[0]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # the sparsifier's seed drives dropout in its private copy
            torch.nn.functional.cross_entropy(m(x), y).backward()
        ref = (m[0].weight.grad * m[0].weight).abs()
        assert torch.allclose(sp._scores["0.weight"], ref)
    assert not torch.allclose(tr._scores["0.weight"], ev._scores["0.weight"])
    assert ctx.model.training and not ctx.model[1].training  # flags of the caller's model untouched


def test_masks_round_trip_and_pickle_free_file(ctx, tmp_path):
    path = tmp_path / "m.pt"
    graphprune.save_masks(ctx.good, path)
    back = graphprune.load_masks(path)
    assert back.keys() == ctx.good.keys() and all(torch.equal(back[k], ctx.good[k]) for k in back)
    buf = io.BytesIO(path.read_bytes())
    assert torch.load(buf, weights_only=True)["format"] == "graphprune-masks"


def test_errors_module_exports_the_hierarchy():
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), GraphPruneError)


def test_save_and_load_masks_dispatch_to_safetensors(ctx, tmp_path):
    from safetensors import safe_open

    path = tmp_path / "m.safetensors"
    graphprune.save_masks(ctx.good, path)
    with safe_open(str(path), "np") as f:
        meta = f.metadata()
        assert set(f.keys()) == set(ctx.good)
    assert "format" in meta and "version" in meta
    back = graphprune.load_masks(path)
    assert set(back) == set(ctx.good) and all(torch.equal(back[k], ctx.good[k]) for k in ctx.good)
    other = tmp_path / "m.bin"  # a safetensors file under another name is recognised by its header
    other.write_bytes(path.read_bytes())
    assert all(torch.equal(graphprune.load_masks(other)[k], ctx.good[k]) for k in ctx.good)
    packed = graphprune.load_masks(path)
    graphprune.save_masks(packed, tmp_path / "again.pt")  # PackedMasks save in the torch format too
    assert all(torch.equal(graphprune.load_masks(tmp_path / "again.pt")[k], ctx.good[k]) for k in ctx.good)
    with pytest.raises(MaskError, match="dtype torch.bool"):
        graphprune.save_masks({"0.weight": torch.ones(2)}, tmp_path / "x.safetensors")
    with pytest.raises(ParameterError, match="'format' parameter of save_masks"):
        graphprune.save_masks(ctx.good, tmp_path / "y.pt", format="npz")


# -- the graph argument: every graph-first public function refuses a non-graph the same way (issue 22) ------------
def _graph_first():
    from graphprune import analysis, convert

    calls = {name: getattr(analysis, name) for name in (
        "node_status", "degree_table", "removable_edges", "reachability", "effective_mask", "effective_sparsity",
        "layer_collapse", "count_paths", "components", "articulation_points", "bridges", "report")}
    calls.update({name: getattr(convert, name) for name in (
        "to_networkx", "to_scipy", "to_pyg", "to_graph_tool", "edges_frame", "nodes_frame")})
    calls["compare"] = lambda G: graphprune.compare({"a": {}}, G)
    return calls


NOT_GRAPHS = [("layer", r"'layer' \(str\) instead\. Build one with graphprune\.from_model"),
              (5, r"5 \(int\) instead\. Build one"),
              (None, r"None \(NoneType\) instead\. Build one"),
              ("model", r"a Sequential instead\. Export the model first: G = graphprune\.from_model"),
              ("masks", r"\(dict\) instead\. A dict of masks is not a graph: pass the graph first and the masks by "
                        "keyword")]


@pytest.mark.parametrize("value, needle", NOT_GRAPHS, ids=[str(v) for v, _ in NOT_GRAPHS])
@pytest.mark.parametrize("name", sorted(_graph_first()))
def test_graph_first_functions_refuse_a_non_graph(ctx, name, value, needle):
    value = {"model": ctx.model, "masks": ctx.good}.get(value, value) if isinstance(value, str) else value
    fn = _graph_first()[name]
    if name == "compare" and value is None:  # compare's G is optional (candidates may be graphs): its own message
        needle = None
    before = _state(ctx)
    match = (rf"(?s)The 'G' parameter of {name} must be a MultipartiteGraph\. Got .*?{needle}" if needle else
             r"The 'G' parameter of compare is needed when the candidates are masks \(candidate 'a'\)")
    with pytest.raises(ParameterError, match=match):
        fn(value)
    _assert_unchanged(before, _state(ctx))


@pytest.mark.parametrize("call, match", [
    (lambda c: graphprune.spectral_similarity("layer", c.good), r"'dense' parameter of spectral_similarity must be "
                                                                 r"a MultipartiteGraph\. Got 'layer' \(str\)"),
    (lambda c: graphprune.analysis.algebraic_connectivity("layer"), r"'B' parameter of algebraic_connectivity must "
                                                                     r"be a 2-D biadjacency.*Got 'layer' \(str\)"),
    (lambda c: graphprune.analysis.block_spectrum_metrics(None), r"'B' parameter of block_spectrum_metrics.*None"),
    (lambda c: graphprune.analysis.block_spectral_similarity(np.ones((2, 2)), c.model),
     r"'sparse_B' parameter of block_spectral_similarity.*a Sequential"),
    (lambda c: graphprune.analysis.algebraic_connectivity(np.ones(3)), r"'B' parameter.*2-D"),
], ids=["spectral_similarity", "algebraic_connectivity", "block_spectrum_metrics", "block_spectral_similarity",
        "algebraic_connectivity 1-D"])
def test_spectral_functions_refuse_a_non_graph(ctx, call, match):
    before = _state(ctx)
    with pytest.raises(ParameterError, match=match):
        call(ctx)
    _assert_unchanged(before, _state(ctx))


def test_biadjacency_functions_still_take_arrays_lists_and_sparse():
    """The checks refuse only what is not a matrix: K_{2,2} from a list, an array and a scipy array alike."""
    import scipy.sparse as sp

    from graphprune.analysis import algebraic_connectivity

    # K_{2,2} (a 4-cycle): Laplacian eigenvalues 0, 2, 2, 4, and every edge has R = 3/4 (a 1-ohm edge in parallel
    # with a 3-ohm path)
    for B in ([[1, 1], [1, 1]], np.ones((2, 2)), sp.csr_array(np.ones((2, 2))), torch.ones(2, 2)):
        assert algebraic_connectivity(B) == pytest.approx(2.0)
    for B in ([[1, 1], [1, 1]], np.ones((2, 2), dtype=np.int64), np.ones((2, 2), dtype=bool)):
        assert torch.allclose(graphprune.effective_resistance(B), torch.full((2, 2), 0.75, dtype=torch.float64))


def test_check_graph_by_class_not_by_name_alone():
    """_validation.check_graph (which never imports graph.py) accepts subclasses and rejects a look-alike class."""
    from graphprune._validation import check_graph
    from graphprune.graph import MultipartiteGraph

    G = graphprune.from_model(torch.nn.Sequential(torch.nn.Linear(3, 2)), torch.randn(1, 3))
    assert check_graph(G, "f") is G

    class Sub(MultipartiteGraph):
        pass

    G.__class__ = Sub
    assert check_graph(G, "f") is G
    MultipartiteGraph_ = type("MultipartiteGraph", (), {})  # same name, another module
    with pytest.raises(ParameterError, match=r"The 'G' parameter of f must be a MultipartiteGraph"):
        check_graph(MultipartiteGraph_(), "f")
