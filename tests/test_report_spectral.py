"""The report's spectral metrics against dense numpy references (pseudo-inverses and full eigendecompositions),
on both the dense path (small blocks) and the factor-and-ARPACK path (blocks above 400 nodes)."""

import numpy as np
import pytest

from graphprune.analysis.spectral import algebraic_connectivity, block_spectral_similarity, block_spectrum_metrics


def laplacian(B):
    m, n = B.shape
    A = np.zeros((m + n, m + n))
    A[:m, m:] = B
    A[m:, :m] = B.T
    return np.diag(A.sum(1)) - A


def pencil_reference(Bd, Bs):
    """lambda of Ls x = lambda Ld x on the range of Ld: eigenvalues of Ld^{+1/2} Ls Ld^{+1/2} on that range."""
    Ld, Ls = laplacian(Bd), laplacian(Bs)
    w, U = np.linalg.eigh(Ld)
    keep = w > 1e-9 * w.max()
    R = U[:, keep] / np.sqrt(w[keep])
    lam = np.linalg.eigvalsh(R.T @ Ls @ R)
    return lam.min(), lam.max()


@pytest.mark.parametrize("shape, density", [((6, 9), 0.7), ((40, 30), 0.4), ((260, 240), 0.15)])
def test_kappa_matches_the_pseudo_inverse(shape, density):
    rng = np.random.default_rng(sum(shape))
    W = np.abs(rng.standard_normal(shape))
    Bs = W * (rng.random(shape) < density)
    lo, hi = pencil_reference(W, Bs)
    r = block_spectral_similarity(W, Bs)
    assert r["reason"] == ""
    assert r["lambda_min"] == pytest.approx(lo, rel=1e-6) and r["lambda_max"] == pytest.approx(hi, rel=1e-6)
    assert r["kappa"] == pytest.approx(hi / lo, rel=1e-6)
    assert r["epsilon"] == pytest.approx((hi / lo - 1) / (hi / lo + 1), rel=1e-6)


def test_kappa_of_a_disconnected_dense_reference():
    """A block-diagonal dense block has two components; the sparse one keeps both connected."""
    rng = np.random.default_rng(3)
    W = np.zeros((30, 40))
    W[:15, :20] = np.abs(rng.standard_normal((15, 20)))
    W[15:, 20:] = np.abs(rng.standard_normal((15, 20)))
    Bs = W * (rng.random(W.shape) < 0.6)
    lo, hi = pencil_reference(W, Bs)
    r = block_spectral_similarity(W, Bs)
    assert r["kappa"] == pytest.approx(hi / lo, rel=1e-6)


def test_kappa_is_infinite_with_the_reason_when_pruning_disconnects():
    W = np.ones((300, 250))
    Bs = W.copy()
    Bs[:150, 125:] = 0
    Bs[150:, :125] = 0  # two halves: 2 components where the dense block has 1
    r = block_spectral_similarity(W, Bs)
    assert np.isinf(r["kappa"]) and r["lambda_min"] == 0.0 and r["epsilon"] == 1.0
    assert r["reason"] == "the sparse block has 2 connected components where the dense one has 1"
    assert r["lambda_max"] == pytest.approx(pencil_reference(W, Bs)[1], rel=1e-6)


@pytest.mark.parametrize("shape", [(20, 30), (300, 260)])
def test_algebraic_connectivity_matches_eigvalsh(shape):
    rng = np.random.default_rng(shape[0])
    B = np.abs(rng.standard_normal(shape)) * (rng.random(shape) < 0.4)
    assert (B != 0).sum(0).all() and (B != 0).sum(1).all()
    w = np.linalg.eigvalsh(laplacian(B))
    assert algebraic_connectivity(B) == pytest.approx(w[1], rel=1e-6)
    B[:, 0] = 0
    B[0, :] = 0  # isolated nodes are left out, not counted as components
    L = laplacian(B)
    live = np.flatnonzero(np.diag(L) > 0)
    w = np.linalg.eigvalsh(L[np.ix_(live, live)])
    assert algebraic_connectivity(B) == pytest.approx(w[1], rel=1e-6)
    B[:, : shape[1] // 2] = 0
    B[: shape[0] // 2, :] = 0
    B[0, 0] = 1.0  # one more component: a lone edge
    assert algebraic_connectivity(B) == 0.0


def test_spectrum_metrics_match_numpy_svd_on_the_arpack_path():
    rng = np.random.default_rng(7)
    B = np.abs(rng.standard_normal((420, 380))) * (rng.random((420, 380)) < 0.05)
    su = np.linalg.svd((B != 0).astype(float), compute_uv=False)
    sw = np.linalg.svd(B, compute_uv=False)
    m = block_spectrum_metrics(B)
    assert m["spectral_gap"] == pytest.approx(su[0] - su[1], rel=1e-7)
    assert m["weighted_spectral_gap"] == pytest.approx(sw[0] - sw[1], rel=1e-7)
    rows, cols = (B != 0).sum(1), (B != 0).sum(0)
    d_out, d_in = rows[rows > 0].mean(), cols[cols > 0].mean()
    assert m["ramanujan_gap"] == pytest.approx(np.sqrt(d_out - 1) + np.sqrt(d_in - 1) - su[1], rel=1e-7)
    assert m["reason"] == ""
    thin = np.eye(420, 380)  # one edge per node: average degree 1
    out = block_spectrum_metrics(thin)
    assert np.isnan(out["ramanujan_gap"]) and out["reason"] == "ramanujan gap undefined: average degree 1.00 < 3"


def test_isolated_nodes_of_the_sparse_block_disconnect_it():
    """A sparse block with an edgeless output node splits the dense block even when one input reaches the rest."""
    W = np.ones((6, 1))
    Bs = W.copy()
    Bs[[1, 4]] = 0
    r = block_spectral_similarity(W, Bs)
    assert np.isinf(r["kappa"])
    assert r["reason"] == "the sparse block has 3 connected components where the dense one has 1"


def test_reasons_are_structured_where_they_arise():
    """The analysers hand the report codes and numbers (derived by hand here), and write the same sentence in their
    public ``reason``: nothing has to parse it back."""
    from graphprune.analysis.spectral import similarity_and_reason, spectrum_metrics_and_reasons

    # eye(3, 4): three matched pairs and one lone input column -> 4 components; ones(3, 4) is connected
    _, why = similarity_and_reason(np.ones((3, 4)), np.eye(3, 4))
    assert (why.code, why.numbers) == ("disconnected", {"components": 4, "dense_components": 1})
    assert why.text == block_spectral_similarity(np.ones((3, 4)), np.eye(3, 4))["reason"]
    _, why = similarity_and_reason(np.ones((30, 30)), np.ones((30, 30)), max_nodes=50)
    assert (why.code, why.numbers) == ("too_large", {"nodes": 60, "max_nodes": 50})
    assert similarity_and_reason(np.ones((3, 4)), np.ones((3, 4)))[1] is None
    # a 5x2 block with 3 edges: average degrees 1 (outputs) and 1.5 (inputs) -> the smaller, 1, is below 3
    B = np.zeros((5, 2))
    B[0, 0] = B[1, 0] = B[2, 1] = 1.0
    _, reasons = spectrum_metrics_and_reasons(B)
    assert set(reasons) == {"ramanujan_gap"}
    assert (reasons["ramanujan_gap"].code, reasons["ramanujan_gap"].numbers) == ("average_degree",
                                                                                 {"average_degree": 1.0})
    # one input column: no second singular value, every gap undefined for that one reason
    _, reasons = spectrum_metrics_and_reasons(np.ones((4, 1)))
    assert {k: r.code for k, r in reasons.items()} == dict.fromkeys(
        ("spectral_gap", "ramanujan_gap", "weighted_spectral_gap"), "one_node_side")
    # no edge at all: every metric undefined
    _, reasons = spectrum_metrics_and_reasons(np.zeros((3, 3)))
    assert reasons["algebraic_connectivity"].code == "few_nodes" and reasons["spectral_gap"].code == "no_edges"
    assert block_spectrum_metrics(np.zeros((3, 3)))["reason"] == "no edges"
