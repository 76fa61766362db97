"""Connectivity reports as pages people read: a self-contained HTML page (styles, a small table sorter and every
figure inlined, so it opens offline). The same content in markdown is :mod:`.markdown`.

The page fits a window 1024 px wide and up: a summary with one-line meanings, the layered picture of the network,
the per-block table (sortable; each header explains its column and the glossary gives the reference; undefined
values read "n/a" with the reason), and figures sized to the page.
"""

from __future__ import annotations

import html
import math

import numpy as np

from ..._version import __version__
from ..glossary import block_columns, summary_items
from . import _format as _fmt

__all__ = ["report_page", "comparison_page"]

esc = html.escape

_CSS = """
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;color:#1b1f24;
 background:#f5f6f8}
main{max-width:1480px;margin:0 auto;padding:18px 22px 40px}
h1{font-size:24px;margin:0 0 2px}
h2{font-size:18px;margin:30px 0 10px;padding-bottom:4px;border-bottom:1px solid #d8dce2}
h3{font-size:15px;margin:16px 0 6px}
p.lead{color:#444;margin:2px 0 12px}
.hint{color:#666;font-size:12px;margin:4px 0 8px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(175px,1fr));gap:8px}
.card{background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:7px 10px}
.card .l{font-weight:600;font-size:13px}
.card .v{font-size:19px;font-weight:650;margin:0}
.card .m{color:#555;font-size:11.5px;line-height:1.3}
.card.bad{border-color:#d62728;background:#fff4f4}
.card.bad .v{color:#c0392b}
.warnings{background:#fff4f4;border-left:4px solid #d62728;padding:8px 14px;margin:12px 0;border-radius:4px}
.warnings ul{margin:4px 0;padding-left:18px}
.ok{background:#f1f8f1;border-left:4px solid #2ca02c;padding:8px 14px;margin:12px 0;border-radius:4px}
figure{margin:0 0 14px;background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:10px;max-width:100%}
figure img{width:100%;height:auto;display:block}
figcaption{color:#555;font-size:12px;margin-top:6px}
.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(460px,1fr));gap:12px}
.tablewrap{max-width:100%;overflow-x:auto;background:#fff;border:1px solid #dde1e6;border-radius:8px}
table{border-collapse:collapse;width:100%;font-size:12.5px}
th{background:#eef1f5;text-align:right;padding:6px 5px;vertical-align:bottom;font-weight:600;cursor:pointer;
 user-select:none;position:sticky;top:0}
th.text,td.text{text-align:left}
th a.q{color:#4c78a8;text-decoration:none;font-size:10px;margin-left:2px}
th.asc::after{content:" ▲";font-size:9px}
th.desc::after{content:" ▼";font-size:9px}
td{padding:4px 5px;border-top:1px solid #eceef1;text-align:right;vertical-align:top;font-variant-numeric:tabular-nums}
td code{font-size:12px}
td.block{min-width:13em;max-width:24em}
td.block code{overflow-wrap:anywhere;word-break:normal}
td .sub{display:block;color:#667;font-size:11px;white-space:nowrap}
td.na,td.inf{color:#888}
td .why{display:block;font-size:10.5px;color:#8a8f98;line-height:1.25}
td.warn{color:#b03a2e;font-size:11.5px;overflow-wrap:anywhere;min-width:80px}
tr:hover td{background:#f7f9fc}
dl.glossary{background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:8px 14px;margin:0}
dl.glossary dt{font-weight:650;margin-top:8px}
dl.glossary dd{margin:1px 0 0 0;color:#333}
dl.glossary .ref{color:#667;font-size:12px}
details{margin:8px 0}
summary{cursor:pointer;font-weight:600}
footer{color:#777;font-size:12px;margin-top:30px}
svg.network{display:block;background:#fff}
"""

_JS = """
document.querySelectorAll('table.sortable').forEach(function(t){
 t.querySelectorAll('thead th').forEach(function(th,i){
  th.addEventListener('click',function(ev){
   if(ev.target.tagName==='A')return;
   var tb=t.tBodies[0],rows=Array.prototype.slice.call(tb.rows),asc=th.getAttribute('data-dir')!=='asc';
   t.querySelectorAll('thead th').forEach(function(h){h.removeAttribute('data-dir');h.classList.remove('asc','desc')});
   th.setAttribute('data-dir',asc?'asc':'desc');th.classList.add(asc?'asc':'desc');
   rows.sort(function(a,b){
    var x=a.cells[i].getAttribute('data-v'),y=b.cells[i].getAttribute('data-v');
    var ex=(x===null||x===''),ey=(y===null||y==='');
    if(ex||ey)return ex-ey;
    var nx=parseFloat(x),ny=parseFloat(y);
    var c=(!isNaN(nx)&&!isNaN(ny))?nx-ny:String(x).localeCompare(String(y));
    return asc?c:-c;});
   rows.forEach(function(r){tb.appendChild(r)});
  });});});
"""


# ---------------------------------------------------------------------------------------------------------------
# formatting
# ---------------------------------------------------------------------------------------------------------------
def _breakable(name):
    """A module path that may wrap after its dots only."""
    return esc(str(name)).replace(".", ".<wbr>")


def _cell(key, row, fmt, index):
    """One ``<td>`` of the block table, with ``data-v`` for sorting and the reason for undefined values."""
    na = row.get("na") or {}
    if key == "block":
        return (f'<td class="text block" data-v="{index}"><code>{_breakable(row["block"])}</code>'
                f'<span class="sub">{esc(row["layer"])}</span></td>')
    if key == "kept":
        return (f'<td data-v="{row["kept"]}" title="{row["kept"]:,} of {row["total"]:,}">{_fmt.count(row["kept"])}'
                f'<span class="sub">of {_fmt.count(row["total"])}</span></td>')
    if key == "warnings":
        text = row.get("warnings") or ""
        return f'<td class="text warn" data-v="{esc(text)}">{esc(text)}</td>'
    if key not in row:
        return '<td class="na" data-v="">n/a<span class="why">not computed</span></td>'
    v = row[key]
    why = na.get(key, "")
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return f'<td class="na" data-v="" title="{esc(why)}">n/a<span class="why">{esc(why)}</span></td>'
    if isinstance(v, (float, np.floating)) and math.isinf(v):
        return (f'<td class="inf" data-v="Infinity" title="{esc(why)}">∞'
                f'<span class="why">{esc(why)}</span></td>')
    extra = f'<span class="why">{esc(why)}</span>' if why else ""
    return f'<td data-v="{float(v)!r}">{_fmt.fmt_value(v, fmt)}{extra}</td>'


def _th(col, extra_class=""):
    cls = ("text " if col["format"] == "text" else "") + extra_class
    tip = f'{col["meaning"]} Reference: {col["reference"]}'
    return (f'<th class="{cls.strip()}" data-key="{esc(col["key"])}" title="{esc(tip)}">{esc(col["label"])}'
            f'<a class="q" href="#g-{esc(col["key"])}" title="glossary: {esc(col["label"])}">?</a></th>')


def _block_table(rep, cols):
    present = [c for c in cols if c["key"] in ("block", "kept", "warnings") or c["key"] in rep.frame.columns]
    head = "".join(_th(c) for c in present)
    body = []
    for i, row in enumerate(rep.frame.to_dict(orient="records")):
        body.append("<tr>" + "".join(_cell(c["key"], row, c["format"], i) for c in present) + "</tr>")
    return (f'<div class="tablewrap"><table class="sortable blocks"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _glossary(items_lists):
    seen, out = set(), []
    for title, items in items_lists:
        out.append(f"<h3>{esc(title)}</h3><dl class='glossary'>")
        for c in items:
            gid = f"g-{c['key']}" if c["key"] not in seen else f"g-s-{c['key']}"
            seen.add(c["key"])
            link = f' <a href="{esc(c["url"])}">{esc(c["url"])}</a>' if c["url"] else ""
            out.append(f'<dt id="{gid}">{esc(c["label"])} <code>{esc(c["key"])}</code></dt>'
                       f'<dd>{esc(c["meaning"])}<div class="ref">{esc(c["reference"])}{link}</div></dd>')
        out.append("</dl>")
    return "".join(out)


def _cards(rep):
    s = rep.summary
    out = []
    for c in summary_items():
        v, why = _fmt.summary_value(c["key"], s)
        bad = (c["key"] == "layer_collapse" and s.get("layer_collapse")) or \
              (c["key"] == "log10_paths" and s.get("log10_paths") == -math.inf) or \
              (c["key"] == "dead_neurons" and s.get("dead_neurons"))
        why = f" ({esc(why)})" if why else ""
        out.append(f'<div class="card{" bad" if bad else ""}" title="{esc(c["reference"])}">'
                   f'<div class="l">{esc(c["label"])}</div><div class="v">{esc(v)}</div>'
                   f'<div class="m">{esc(c["meaning"])}{why}</div></div>')
    return f'<div class="cards">{"".join(out)}</div>'


def _frame_table(frame):
    """A plain sortable table of a DataFrame (text columns left, numbers right)."""
    cols = list(frame.columns)
    head = "".join(f'<th class="{"" if frame[c].dtype.kind in "iuf" else "text"}">{esc(str(c))}</th>' for c in cols)
    body = []
    for r in frame.itertuples(index=False):
        cells = []
        for c, v in zip(cols, r):
            if frame[c].dtype.kind in "iuf":
                cells.append(f'<td data-v="{float(v)!r}">{v:,}</td>')
            else:
                cells.append(f'<td class="text" data-v="{esc(str(v))}">{esc(str(v))}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="tablewrap"><table class="sortable"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _structured(rep):
    """The structured prune's section: totals as cards, removed nodes per partition, the per-layer table."""
    st = rep.structured
    cards = "".join(f'<div class="card"><div class="l">{esc(label)}</div><div class="v">{esc(v)}</div>'
                    f'<div class="m">{esc(m)}</div></div>' for label, v, m in _fmt.structured_rows(st))
    out = ["<h2 id='structured'>Structured pruning</h2>", f'<div class="cards">{cards}</div>']
    if st.nodes is not None and len(st.nodes):
        out.append("<h3>Removed nodes per partition</h3>" + _frame_table(st.nodes))
    out.append(f"<details><summary>Parameters and MACs of the {len(st.layers)} layers, before and after"
               f"</summary>{_frame_table(st.layers)}</details>")
    return "".join(out)


def _warnings(rep):
    w = rep.summary["warnings"]
    if not w:
        return '<div class="ok">No layer collapse: every block keeps an effective edge and input reaches output.</div>'
    items = "".join(f"<li>{esc(x)}</li>" for x in w[:40])
    more = f"<li>… and {len(w) - 40} more</li>" if len(w) > 40 else ""
    return f'<div class="warnings"><b>Warnings</b><ul>{items}{more}</ul></div>'


_NETWORK_CAPTION = ("One column per layer of the partition graph (longest path from the input); each box is a "
                    "partition of neurons or channels (number: nodes; red: dead nodes, on no input-output path). "
                    "Solid edges are weight blocks, coloured by effective density and labelled with the kept "
                    "density; dashed edges are residual additions and concatenations. Hover for names.")


def _network(rep, title, legend=True, caption=True, max_height=None):
    from .network import network_legend, network_svg

    svg = network_svg(rep.network, title=title, max_height=max_height)
    cap = f"<figcaption>{esc(_NETWORK_CAPTION)}</figcaption>" if caption else ""
    return f'<figure class="network-figure">{svg}{network_legend() if legend else ""}{cap}</figure>'


def _img(fig, alt, caption):
    from .figures import figure_data_uri

    return (f'<figure class="plot"><img alt="{esc(alt)}" src="{figure_data_uri(fig)}">'
            f'<figcaption>{esc(caption)}</figcaption></figure>')


def _partitions_table(rep):
    cols = ["partition", "role", "kind", "size", "in_mean", "in_max", "out_mean", "out_max", "isolated", "sinks",
            "sources", "dead"]
    head = "".join(f'<th class="{"text" if c in ("partition", "role", "kind") else ""}">{c}</th>' for c in cols)
    body = []
    for r in rep.partitions.to_dict(orient="records"):
        cells = []
        for c in cols:
            v = r[c]
            if c in ("partition", "role", "kind"):
                cells.append(f'<td class="text" data-v="{esc(str(v))}"><code>{esc(str(v))}</code></td>')
            else:
                cells.append(f'<td data-v="{float(v)!r}">{_fmt.num(v) if isinstance(v, float) else v}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="tablewrap"><table class="sortable partitions"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _page(title, body):
    version = __version__
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{esc(title)}</title><style>{_CSS}</style></head><body><main>{body}"
            f"<footer>Written by graphprune {esc(version)}. Self-contained: styles, script and figures are inside "
            f"this file.</footer></main><script>{_JS}</script></body></html>")


# ---------------------------------------------------------------------------------------------------------------
# pages
# ---------------------------------------------------------------------------------------------------------------
def report_page(rep, *, figures: bool = True, title: str = "Connectivity report") -> str:
    """The HTML page of one :class:`~graphprune.analysis.report.ConnectivityReport`."""
    from .figures import degree_figure, density_figure, pick_blocks, spectra_figure

    cols = block_columns()
    opts = rep.options
    parts = [f"<h1>{esc(title)}</h1><p class='lead'>{esc(_fmt.describe(rep.graph))}; spectral metrics "
             f"{'in the ' + esc(opts['view']) + ' view' if opts['spectral'] else 'not computed'}.</p>",
             "<h2 id='summary'>Summary</h2>", _cards(rep), _warnings(rep),
             _structured(rep) if getattr(rep, "structured", None) is not None else "",
             "<h2 id='network'>Network</h2>", _network(rep, "layered picture of the network"),
             "<h2 id='blocks'>Blocks</h2><p class='hint'>One row per weight block. Click a header to sort; hover "
             "it (or follow its ?) for what the column measures and its reference. n/a: the value is undefined, "
             "with the reason under it.</p>", _block_table(rep, cols)]
    if figures and len(rep.frame):
        parts.append("<h2 id='plots'>Plots</h2>")
        parts.append(_img(density_figure({"masks": rep.frame}), "density per block",
                          "Kept (light) and effective (dark) density of every block."))
        shown = "" if len(rep.frame) <= 24 else f" (the first 24 of {len(rep.frame)} blocks)"
        parts.append(_img(degree_figure(rep), "degree histograms per block",
                          f"Kept in-degree of each block's output nodes{shown}; red bars are nodes with no kept "
                          "input."))
        if opts["spectral"]:
            blocks = pick_blocks(rep.frame, 3)
            parts.append(_img(spectra_figure({"pruned": rep}, blocks, view=opts["view"]), "spectra",
                              "Singular values of |W| of three blocks (the largest of the first, middle and last "
                              "third of the network), dense against pruned, relative to the dense block's largest; "
                              "numerical zeros (below 1e3 machine epsilon) are not drawn."))
    parts.append("<h2 id='partitions'>Partitions</h2>")
    parts.append(f"<details><summary>Degree statistics of the {len(rep.partitions)} partitions</summary>"
                 f"{_partitions_table(rep)}</details>")
    parts.append("<h2 id='glossary'>Glossary</h2>")
    parts.append(_glossary([("Per-block columns", cols), ("Summary", summary_items())]))
    return _page(title, "".join(parts))


def _comparison_summary(cmp, cols):
    """The sortable table of one row per candidate, with the reasons of infinite or undefined values."""
    head = ('<th class="text" data-key="candidate" title="The masks compared: the key given to compare() for each '
            'sparsifier.">candidate</th>') + "".join(_th(c) for c in cols)
    body = []
    for i, (name, row) in enumerate(cmp.frame.to_dict(orient="index").items()):
        cells = [f'<td class="text" data-v="{i}" style="white-space:nowrap"><b>{esc(str(name))}</b></td>']
        for c in cols:
            v = row.get(c["key"])
            if _fmt.is_missing(v):
                why = cmp.na.get(name, {}).get(c["key"], "")
                sym = "−∞" if isinstance(v, float) and v == -math.inf else ("∞" if v == math.inf else "n/a")
                dv = "-Infinity" if sym == "−∞" else ("Infinity" if sym == "∞" else "")
                cells.append(f'<td class="na" data-v="{dv}" title="{esc(why)}">{sym}<span class="why">{esc(why)}'
                             f'</span></td>')
            else:
                cells.append(f'<td data-v="{float(v)!r}">{_fmt.fmt_value(v, c["format"])}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="tablewrap"><table class="sortable compare"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _per_block_densities(reports):
    """Per block, each candidate's kept and effective density side by side (one column per candidate)."""
    names = list(reports)
    first = next(iter(reports.values()))
    bhead = ['<th class="text" data-key="block" title="The weight\'s module path, layer type and shape.">block'
             '<a class="q" href="#g-block">?</a></th>']
    for n in names:  # one column per candidate (kept over effective in one cell): the table fits as candidates grow
        bhead.append(f'<th data-key="density" title="{esc(n)}: kept density (fraction of the block\'s weights kept), '
                     f'and below it the effective density (kept and on an input-output path; Vysogorets &amp; Kempe, '
                     f'JMLR 2023). Sorts by kept density.">{esc(n)}<br>kept / eff.</th>')
    frames = {n: r.frame.set_index("block") for n, r in reports.items()}
    brows = []
    for i, row in enumerate(first.frame.to_dict(orient="records")):
        cells = [f'<td class="text block" data-v="{i}"><code>{_breakable(row["block"])}</code>'
                 f'<span class="sub">{esc(row["layer"])}</span></td>']
        for n in names:
            f = frames[n].loc[row["block"]]
            style = ' style="color:#c0392b;font-weight:600"' if f["effective_density"] == 0 else ""
            cells.append(f'<td data-v="{float(f["density"])!r}">{_fmt.pct(f["density"])}'
                         f'<span class="sub"{style}>{_fmt.pct(f["effective_density"])}</span></td>')
        brows.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="tablewrap"><table class="sortable perblock"><thead><tr>{"".join(bhead)}</tr>'
            f'</thead><tbody>{"".join(brows)}</tbody></table></div>')


def _comparison_plots(reports):
    from .figures import density_figure, pick_blocks, spectra_figure

    first = next(iter(reports.values()))
    parts = ["<h2 id='plots'>Plots</h2>",
             _img(density_figure({n: r.frame for n, r in reports.items()}), "density per block",
                  "Kept (light) and effective (dark) density per block, one colour per candidate.")]
    if first.options["spectral"]:
        blocks = pick_blocks(first.frame, 3)
        parts.append(_img(spectra_figure(reports, blocks, view=first.options["view"]), "spectra",
                          "Singular values of |W| of three blocks (the largest of each third of the network) "
                          "for every candidate against the dense network, relative to the dense block's largest; "
                          "numerical zeros are not drawn."))
    return parts


def _comparison_networks(reports):
    from .network import network_legend

    parts = [f"<h2 id='networks'>Networks</h2><p class='hint'>One picture per candidate: one column per layer "
             "of the partition graph, boxes are partitions (number: nodes, red: dead nodes), solid edges weight "
             "blocks coloured by effective density and labelled with the kept density, dashed edges residual "
             f"additions and concatenations. Hover for names.</p>{network_legend()}<div class='grid2'>"]
    for n, r in reports.items():
        pic = _network(r, f"network pruned by {n}", legend=False, caption=False, max_height=300)
        parts.append(f"<div><h3>{esc(n)}</h3>{pic}</div>")
    return parts


def comparison_page(cmp, *, figures: bool = True, title: str = "Comparison of sparsifiers") -> str:
    """The HTML page of a :class:`~graphprune.analysis.report.Comparison`."""
    reports = cmp.reports
    first = next(iter(reports.values()))
    cols = _fmt.compare_columns(cmp.frame)
    parts = [f"<h1>{esc(title)}</h1><p class='lead'>{len(reports)} candidates on one network: "
             f"{esc(_fmt.describe(first.graph))}.</p>",
             "<h2 id='summary'>Summary</h2><p class='hint'>One row per candidate. Click a header to sort; hover it "
             "for what it measures.</p>", _comparison_summary(cmp, cols)]
    warn = [(n, r.summary["warnings"]) for n, r in reports.items() if r.summary["warnings"]]
    if warn:
        items = "".join(f"<li><b>{esc(n)}</b>: {esc('; '.join(w[:6]))}{' …' if len(w) > 6 else ''}</li>"
                        for n, w in warn)
        parts.append(f'<div class="warnings"><b>Warnings</b><ul>{items}</ul></div>')
    parts += ["<h2 id='blocks'>Per-block density</h2>", _per_block_densities(reports)]
    if figures:
        parts += _comparison_plots(reports)
    parts += _comparison_networks(reports)
    parts.append("</div><h2 id='details'>Candidates in detail</h2>")
    for n, r in reports.items():
        parts.append(f"<details><summary>{esc(n)}: per-block table</summary>{_block_table(r, block_columns())}"
                     "</details>")
    parts.append("<h2 id='glossary'>Glossary</h2>")
    parts.append(_glossary([("Summary", cols), ("Per-block columns", block_columns())]))
    return _page(title, "".join(parts))
