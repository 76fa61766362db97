"""Connectivity reports and comparisons in markdown: the page's content without styles or figures."""

from __future__ import annotations

import math

from ..glossary import block_columns, summary_items
from . import _format as _fmt

__all__ = ["report_markdown", "comparison_markdown"]


def _md_cell(key, row, fmt):
    if key == "block":
        return f"`{row['block']}` {row['layer']}"
    if key == "kept":
        return f"{row['kept']:,} / {row['total']:,}"
    if key == "warnings":
        return row.get("warnings") or ""
    if key not in row:
        return "n/a (not computed)"
    v = row[key]
    why = (row.get("na") or {}).get(key, "")
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return f"n/a ({why})" if why else "n/a"
    if isinstance(v, float) and math.isinf(v):
        return f"∞ ({why})" if why else "∞"
    return _fmt.fmt_value(v, fmt) + (f" ({why})" if why else "")


def _md_table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return out


def _md_glossary(items):
    return [f"- **{c['label']}** (`{c['key']}`): {c['meaning']} {c['reference']}"
            + (f" <{c['url']}>" if c["url"] else "") for c in items]


def report_markdown(rep, *, title="Connectivity report") -> str:
    """The report page's content in markdown."""
    cols = [c for c in block_columns() if c["key"] in ("block", "kept", "warnings") or c["key"] in rep.frame]
    lines = [f"# {title}", "", _fmt.describe(rep.graph) + ".", "", "## Summary", ""]
    for c in summary_items():
        v, why = _fmt.summary_value(c["key"], rep.summary)
        lines.append(f"- **{c['label']}**: {v}{f' ({why})' if why else ''}: {c['meaning']}")
    lines.append("")
    if rep.summary["warnings"]:
        lines += ["## Warnings", ""] + [f"- WARNING: {w}" for w in rep.summary["warnings"]] + [""]
    if getattr(rep, "structured", None) is not None:
        st = rep.structured
        lines += ["## Structured pruning", ""] + [f"- **{label}**: {v}: {m}"
                                                  for label, v, m in _fmt.structured_rows(st)]
        if st.nodes is not None and len(st.nodes):
            lines += ["", "Removed nodes per partition:", ""]
            lines += _md_table(list(st.nodes.columns), [[str(v) for v in r] for r in st.nodes.itertuples(index=False)])
        lines += ["", "Layers, before and after:", ""]
        lines += _md_table(list(st.layers.columns), [[str(v) for v in r] for r in st.layers.itertuples(index=False)])
        lines.append("")
    lines += ["## Network", ""]
    lay = rep.network
    for p in lay["partitions"]:
        marks = (f", {p['dead']} dead" if p["dead"] else "") + (f", {p['isolated']} isolated" if p["isolated"] else "")
        lines.append(f"- column {p['column']}: `{p['name']}` ({p['role']}, {p['kind']}) {p['size']} nodes{marks}")
    for e in lay["blocks"]:
        if e["kind"] == "weight":
            lines.append(f"  - `{e['src']}` → `{e['dst']}`: {e['name']} ({e['layer']}), kept {_fmt.pct(e['density'])}, "
                         f"effective {_fmt.pct(e.get('effective_density', e['density']))}")
        else:
            lines.append(f"  - `{e['src']}` ⇢ `{e['dst']}`: {e['kind']}")
    lines += ["", "## Blocks", ""]
    rows = [[_md_cell(c["key"], r, c["format"]) for c in cols] for r in rep.frame.to_dict(orient="records")]
    lines += _md_table([c["label"] for c in cols], rows)
    lines += ["", "## Glossary", ""] + _md_glossary(cols) + _md_glossary(summary_items())
    return "\n".join(lines) + "\n"


def comparison_markdown(cmp, *, title="Comparison of sparsifiers") -> str:
    """The comparison page's content in markdown."""
    cols = _fmt.compare_columns(cmp.frame)
    lines = [f"# {title}", "", "## Summary", ""]
    rows = []
    for name, row in cmp.frame.to_dict(orient="index").items():
        rows.append([name] + ["n/a" if _fmt.is_missing(row.get(c["key"])) and not (
            isinstance(row.get(c["key"]), float) and math.isinf(row[c["key"]]))
            else ("−∞" if row[c["key"]] == -math.inf else "∞" if row[c["key"]] == math.inf
                  else _fmt.fmt_value(row[c["key"]], c["format"])) for c in cols])
    lines += _md_table(["candidate"] + [c["label"] for c in cols], rows)
    names = list(cmp.reports)
    first = cmp.reports[names[0]]
    frames = {n: r.frame.set_index("block") for n, r in cmp.reports.items()}
    lines += ["", "## Per-block density (kept / effective)", ""]
    brows = [[f"`{b}` {layer}"] + [f"{_fmt.pct(frames[n].loc[b, 'density'])} / "
                                   f"{_fmt.pct(frames[n].loc[b, 'effective_density'])}" for n in names]
             for b, layer in zip(first.frame.block, first.frame.layer)]
    lines += _md_table(["block"] + names, brows)
    for n, r in cmp.reports.items():
        if r.summary["warnings"]:
            lines += ["", f"### Warnings: {n}", ""] + [f"- {w}" for w in r.summary["warnings"]]
    lines += ["", "## Glossary", ""] + _md_glossary(cols)
    return "\n".join(lines) + "\n"
