"""The byte-level Llama of graphprune.experiments.lm: corpus, splits, perplexity, calibration windows, loading."""

import hashlib
import lzma
import math

import pytest
import torch

from graphprune.errors import ParameterError
from graphprune.experiments import lm

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def raw():
    """The committed corpus, decompressed here without the module."""
    return lzma.decompress(lm.CORPUS_PATH.read_bytes())


def _tiny_model(seed=0):
    config = lm.lm_config(hidden_size=16, intermediate_size=24, num_hidden_layers=1, num_attention_heads=2,
                          num_key_value_heads=1, max_position_embeddings=32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return transformers.LlamaForCausalLM(config).eval()


def test_corpus_checksum_and_splits(raw):
    assert hashlib.sha256(raw).hexdigest() == lm.CORPUS_SHA256
    assert lm.corpus() == raw
    train, test = lm.splits()
    cut = int(0.9 * len(raw))
    assert (len(train), len(test)) == (cut, len(raw) - cut)
    assert train.dtype == test.dtype == torch.int64
    # train is exactly the leading 90% of the bytes and test the rest: disjoint and together the whole corpus
    assert bytes(train.tolist()) == raw[:cut]
    assert bytes(test.tolist()) == raw[cut:]


def test_build_corpus_joins_sorted_topics():
    from pydoc_data.topics import topics

    built = lm.build_corpus()
    first = sorted(topics)[0]
    assert built.startswith(topics[first].encode("utf-8") + b"\n\n")
    assert len(built) == sum(len(v.encode("utf-8")) for v in topics.values()) + 2 * (len(topics) - 1)


def test_corpus_errors(tmp_path):
    with pytest.raises(ParameterError, match="missing.*python -m graphprune.experiments.lm corpus"):
        lm.corpus(tmp_path / "nope.txt.xz")
    bad = tmp_path / "bad.txt.xz"
    bad.write_bytes(lzma.compress(b"not the corpus"))
    with pytest.raises(ParameterError, match="sha256"):
        lm.corpus(bad)
    bad.write_bytes(b"plain text")
    with pytest.raises(ParameterError, match="not a valid xz"):
        lm.corpus(bad)


def test_perplexity_matches_naive_loop():
    model = _tiny_model()
    gen = torch.Generator().manual_seed(3)
    seq_len = 8
    tokens = torch.randint(0, 256, (5 * seq_len + 3,), generator=gen)  # 3 trailing ids are dropped
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(5):
            window = tokens[i * seq_len:(i + 1) * seq_len]
            logits = model(input_ids=window[None]).logits[0].double()
            for t in range(seq_len - 1):
                total -= float(logits[t, window[t + 1]] - torch.logsumexp(logits[t], dim=0))
                count += 1
    expected = math.exp(total / count)
    model.train()
    got = lm.perplexity(model, tokens, seq_len=seq_len, batch_size=2)
    assert got == pytest.approx(expected, rel=1e-5)
    assert model.training  # restored
    # an untrained model is close to uniform over 256 bytes
    assert 200 < got < 320


def test_perplexity_errors():
    model = _tiny_model()
    with pytest.raises(ParameterError, match="'tokens'"):
        lm.perplexity(model, torch.zeros(5, dtype=torch.long), seq_len=8)
    with pytest.raises(ParameterError, match="'seq_len'"):
        lm.perplexity(model, torch.zeros(20, dtype=torch.long), seq_len=1)


def test_load_lm_trained_model_beats_perplexity_4():
    before = torch.get_rng_state()
    model = lm.load_lm()
    assert torch.equal(torch.get_rng_state(), before)
    assert not model.training
    assert all(p.dtype == torch.float32 for p in model.parameters())
    config = model.config
    assert (config.vocab_size, config.num_attention_heads, config.num_key_value_heads) == (256, 4, 2)
    assert not config.tie_word_embeddings
    _, test = lm.splits()
    assert lm.perplexity(model, test[:8 * 128]) < 4


def test_load_lm_missing_and_mismatched(tmp_path):
    missing = tmp_path / "missing.safetensors"
    with pytest.raises(ParameterError, match=r"missing\.safetensors.*python -m graphprune\.experiments\.lm train"):
        lm.load_lm(missing)
    wrong = lm.save_lm(_tiny_model(), tmp_path / "tiny.safetensors")
    assert not (tmp_path / "tiny.safetensors.tmp").exists()
    with pytest.raises(ParameterError, match="do not fit lm_config"):
        lm.load_lm(wrong)


def test_calibration_batches_deterministic_and_from_train(raw):
    before = torch.get_rng_state()
    a = lm.calibration_batches(6, 32, seed=5)
    assert torch.equal(torch.get_rng_state(), before)
    assert a.shape == (6, 32) and a.dtype == torch.int64
    assert torch.equal(a, lm.calibration_batches(6, 32, seed=5))
    assert not torch.equal(a, lm.calibration_batches(6, 32, seed=6))
    train_bytes = raw[:int(0.9 * len(raw))]
    for row in a.tolist():
        assert bytes(row) in train_bytes
    with pytest.raises(ParameterError, match="'seed'"):
        lm.calibration_batches(2, 8, seed=-1)


def test_train_lm_few_steps_is_seeded():
    config = lm.lm_config(hidden_size=16, intermediate_size=24, num_hidden_layers=1, num_attention_heads=2,
                          num_key_value_heads=1, max_position_embeddings=32)
    before = torch.get_rng_state()
    a = lm.train_lm(seed=1, steps=3, seq_len=16, batch_size=2, warmup=1, config=config, progress=False)
    b = lm.train_lm(seed=1, steps=3, seq_len=16, batch_size=2, warmup=1, config=config, progress=False)
    assert torch.equal(torch.get_rng_state(), before)
    assert not a.training
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    with pytest.raises(ParameterError, match="'seq_len'"):
        lm.train_lm(steps=1, seq_len=64, config=config, progress=False)
