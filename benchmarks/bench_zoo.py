"""Export time, peak memory and weight coverage of the networks people prune today, at standard sizes.

Models are built from their configs with random init (nothing downloaded): GPT-2 small, a Llama-2-7B-sized model
with 2 layers (bfloat16, built on the meta device then materialised), BERT-base, torchvision's vit_b_16, swin_t and
convnext_tiny. Targets: GPT-2 small under 5 s, the 2-layer 7B-sized Llama under 10 s. Coverage is the fraction of
prunable weights (Linear, ConvNd, Embedding, attention projections, transformers Conv1D; tied ones once) that
back edges; the forward pass of the same model, measured in the same run, is the peer (export runs one forward for
its shapes, plus the trace).

    .venv/bin/python benchmarks/bench_zoo.py [--runs 3] [--only gpt2,llama2-7b-2l]
"""

import argparse
import os
import sys
import warnings

import torch

sys.path.insert(0, os.path.dirname(__file__))
from _measure import timed_peak  # noqa: E402

import graphprune  # noqa: E402
from graphprune.export import prunable_weights  # noqa: E402


def _ids(n):
    return {"input_ids": torch.randint(0, 1000, (1, n)), "attention_mask": torch.ones(1, n, dtype=torch.long)}


def gpt2():
    import transformers as T

    return T.GPT2LMHeadModel(T.GPT2Config()), _ids(32), 5.0


def llama_7b_2_layers():
    import transformers as T

    cfg = T.LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=2, num_attention_heads=32,
                        num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096)
    with torch.device("meta"):
        model = T.LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.to_empty(device="cpu")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02, generator=g)
    rotary = model.model.rotary_emb  # its inverse frequencies are buffers that to_empty left undefined
    model.model.rotary_emb = type(rotary)(config=cfg)
    return model, _ids(16), 10.0


def bert_base():
    import transformers as T

    return T.BertModel(T.BertConfig()), _ids(32), None


def tv(name, size=224):
    import torchvision

    return lambda: (getattr(torchvision.models, name)(), torch.randn(1, 3, size, size), None)


CASES = {
    "gpt2-small": gpt2,
    "llama2-7b-2l": llama_7b_2_layers,
    "bert-base": bert_base,
    "vit_b_16": tv("vit_b_16"),
    "swin_t": tv("swin_t"),
    "convnext_tiny": tv("convnext_tiny"),
}


def _forward(model, x):
    model.eval()
    with torch.no_grad():
        return model(**x) if isinstance(x, dict) else model(x)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", default="", help="comma-separated case names")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    torch.manual_seed(0)
    names = [n for n in CASES if not args.only or n in args.only.split(",")]
    print(f"{'model':<15} {'prunable':>13} {'export s':>9} {'peak MiB':>9} {'forward s':>10} "
          f"{'ratio':>6} {'coverage':>9}  target")
    for name in names:
        print(measure(name, args.runs), flush=True)


def measure(name, runs):
    model, x, target = CASES[name]()
    runs = 1 if name.startswith("llama") else runs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_exp, peak, G = timed_peak(lambda: graphprune.from_model(model, x), runs)
    t_fwd, _, _ = timed_peak(lambda: _forward(model, x), runs)
    want = prunable_weights(model)
    total = sum(want.values())
    used = set(G.params)
    covered = sum(v for k, v in want.items() if k in used)
    verdict = "" if target is None else (f"ok <{target:g}s" if t_exp < target else f"MISSED <{target:g}s")
    return (f"{name:<15} {total:>13,} {t_exp:>9.2f} {peak:>9.0f} {t_fwd:>10.2f} "
            f"{t_exp / max(t_fwd, 1e-9):>5.1f}x {covered / total:>9.4f}  {verdict}")


if __name__ == "__main__":
    main()
