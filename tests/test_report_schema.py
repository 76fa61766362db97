"""The report's JSON documents against the documented schema (docs/report_schema.json)."""

import json
import math
import os

import pytest
import torch

import graphprune
from graphprune.analysis.glossary import SCHEMA_VERSION, block_columns

SCHEMA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "report_schema.json")
_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def validate(doc, schema, defs, path="$"):
    """A small JSON Schema checker (type, const, enum, required, properties, additionalProperties, items, $ref)."""
    if "$ref" in schema:
        return validate(doc, defs[schema["$ref"]], defs, path)
    if "const" in schema:
        assert doc == schema["const"], f"{path}: {doc!r} != {schema['const']!r}"
    if "enum" in schema:
        assert doc in schema["enum"], f"{path}: {doc!r} not in {schema['enum']}"
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        ok = False
        for t in types:
            if t == "integer":
                ok |= isinstance(doc, int) and not isinstance(doc, bool)
            elif t == "number":
                ok |= isinstance(doc, (int, float)) and not isinstance(doc, bool) and math.isfinite(doc)
            else:
                ok |= isinstance(doc, _TYPES[t]) and not (t != "boolean" and isinstance(doc, bool))
        assert ok, f"{path}: {doc!r} is not {types}"
    if isinstance(doc, dict):
        for key in schema.get("required", []):
            assert key in doc, f"{path}: missing {key!r}"
        props = schema.get("properties", {})
        for key, value in doc.items():
            if key in props:
                validate(value, props[key], defs, f"{path}.{key}")
            elif isinstance(schema.get("additionalProperties"), dict):
                validate(value, schema["additionalProperties"], defs, f"{path}.{key}")
    if isinstance(doc, list) and "items" in schema:
        for i, item in enumerate(doc):
            validate(item, schema["items"], defs, f"{path}[{i}]")


@pytest.fixture(scope="module")
def schemas():
    with open(SCHEMA, encoding="utf-8") as f:
        s = json.load(f)
    return s, {s["report"]["$id"]: s["report"], s["comparison"]["$id"]: s["comparison"]}


@pytest.fixture(scope="module")
def graph():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 6 * 6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    return graphprune.from_model(net, torch.randn(1, 1, 8, 8))


def test_report_document_matches_schema(schemas, graph):
    s, defs = schemas
    rep = graphprune.report(graph, graphprune.sparsify(graph, "random", sparsity=0.95, seed=0))
    doc = json.loads(rep.to_json())
    validate(doc, s["report"], defs)
    assert doc["version"] == SCHEMA_VERSION == s["report"]["properties"]["version"]["const"]
    # every null number in a block has its reason
    for b in doc["blocks"]:
        for key in ("algebraic_connectivity", "spectral_gap", "ramanujan_gap", "weighted_spectral_gap", "kappa"):
            if b[key] is None:
                assert b["na"].get(key), f"{b['block']}.{key} is null without a reason"
    # the glossary covers every column the page shows, and the documented block fields are the frame's
    assert {c["key"] for c in block_columns()} - {"block", "kept", "warnings"} <= set(doc["columns"])
    documented = set(s["report"]["properties"]["blocks"]["items"]["properties"])
    assert set(doc["blocks"][0]) == documented


def test_report_without_spectral_matches_schema(schemas, graph):
    s, defs = schemas
    doc = json.loads(graphprune.report(graph, spectral=False).to_json())
    validate(doc, s["report"], defs)
    assert "kappa" not in doc["blocks"][0] and doc["options"]["spectral"] is False


def test_comparison_document_matches_schema(schemas, graph):
    s, defs = schemas
    cands = {m: graphprune.sparsify(graph, m, sparsity=0.9, seed=0) for m in ("random", "magnitude")}
    doc = json.loads(graphprune.compare(cands, graph).to_json())
    validate(doc, s["comparison"], defs)
    assert [r["candidate"] for r in doc["summary"]] == ["random", "magnitude"]


def test_validator_rejects_wrong_documents(schemas, graph):
    s, defs = schemas
    doc = json.loads(graphprune.report(graph, spectral=False).to_json())
    for broken in ({**doc, "version": 2}, {k: v for k, v in doc.items() if k != "summary"},
                   {**doc, "blocks": [{**doc["blocks"][0], "kept": "12"}]}):
        with pytest.raises(AssertionError):
            validate(broken, s["report"], defs)


def test_report_with_a_structured_summary_matches_schema(schemas, graph):
    import copy

    s, defs = schemas
    net = torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.ReLU(), torch.nn.Linear(12, 2))
    small = copy.deepcopy(net)
    x = torch.randn(3, 6)
    keep = graphprune.prune(small, x[:1], "l2", sparsity=0.5, structured=True, progress=False)
    G = graphprune.from_model(net, x[:1])
    st = graphprune.structured.shrink_summary(net, small, x, G=G, node_masks=keep, runs=1)
    doc = json.loads(graphprune.report(G, graphprune.structured.edge_masks(G, keep), structured=st,
                                       spectral=False).to_json())
    validate(doc, s["report"], defs)
    assert doc["structured"]["summary"]["params_before"] == 6 * 12 + 12 + 12 * 2 + 2
    bad = dict(doc, structured={"summary": {}})
    with pytest.raises(AssertionError):
        validate(bad, s["report"], defs)
