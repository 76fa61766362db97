"""The picture of a network as a layered graph of its partitions: inline SVG of
:func:`graphprune.analysis.partition_graph.network_layout`.

Weight blocks are coloured by effective density and labelled with their kept density, residual and concatenation
(identity) blocks dashed. Dead and isolated nodes are marked in red.
"""

from __future__ import annotations

import html
import math

__all__ = ["network_svg", "network_legend"]


def _color(x):
    """Effective density 0..1 -> a colour from red (0) through amber to blue (1)."""
    if x is None or not math.isfinite(x):
        return "#888888"
    if x <= 0:
        return "#d62728"
    t = min(1.0, math.sqrt(x))  # spread the low densities pruning produces
    stops = [(0.0, (214, 39, 40)), (0.35, (255, 160, 40)), (1.0, (31, 119, 180))]
    for (a, ca), (b, cb) in zip(stops, stops[1:]):
        if t <= b:
            u = (t - a) / (b - a)
            return "#" + "".join(f"{round(ca[i] + u * (cb[i] - ca[i])):02x}" for i in range(3))
    return "#1f77b4"


_FILL = {"input": "#2ca02c", "output": "#9467bd", "hidden": "#4c78a8"}


def _geometry(layout):
    """Sizes of the picture (column width, row height, margins, label band) and each partition's box centre."""
    C = max(layout["columns"], 1)
    R = max((p["rows"] for p in layout["partitions"]), default=1)
    cw = min(140.0, max(44.0, 1100.0 / C))
    rh = 96.0
    top, left = 46.0, 24.0
    longest = 0
    for c in range(C):
        names = [q["name"] for q in layout["partitions"] if q["column"] == c]
        longest = max(longest, len(" / ".join(_short(n) for n in names)))
    label_h = min(190.0, 14 + 4.2 * longest)
    maxsize = max((p["size"] for p in layout["partitions"]), default=1)
    pos = {}
    for p in layout["partitions"]:
        x = left + cw * (p["column"] + 0.5)
        y = top + rh * (p["row"] + 0.5 + (R - p["rows"]) / 2.0)
        h = 18 + 44 * math.log10(max(p["size"], 1) + 1) / math.log10(maxsize + 1)
        pos[p["name"]] = (x, y, h)
    return dict(C=C, R=R, cw=cw, rh=rh, top=top, W=left * 2 + cw * C + 60, H=top + rh * R + label_h,
                wn=min(16.0, cw * 0.32), pos=pos)


def _edge(e, g, esc):
    """A block as an SVG path (an arc over the row for a skip along it), with its tooltip and kept-density label."""
    cw, top, rh, wn = g["cw"], g["top"], g["rh"], g["wn"]
    x1, y1, _ = g["pos"][e["src"]]
    x2, y2, _ = g["pos"][e["dst"]]
    x1 += wn / 2
    x2 -= wn / 2
    span = round((x2 - x1) / cw)
    if e["kind"] == "weight":
        dens = e.get("density", 1.0)
        eff = e.get("effective_density", dens)
        stroke = _color(eff)
        width = 1.2 + 4.0 * math.sqrt(max(dens, 0.0))
        dash = ""
        tip = (f"{e['name']} ({e['layer']}): kept {100 * dens:.1f}%, effective "
               f"{100 * eff:.1f}%")
    else:
        stroke, width, dash = "#8c6d31", 1.6, ' stroke-dasharray="5 3"'
        tip = f"{e['name']}: {e['kind']} connection (not prunable)"
    if abs(y1 - y2) < 1 and span > 1:  # a skip along the same row: arc above it
        hgt = min(top - 6 + rh * 0.3, 14 + 9 * span)
        d = f"M{x1:.1f},{y1:.1f} C{x1 + cw * 0.6:.1f},{y1 - hgt:.1f} {x2 - cw * 0.6:.1f},{y2 - hgt:.1f} " \
            f"{x2:.1f},{y2:.1f}"
        mx, my = (x1 + x2) / 2, y1 - hgt * 0.75
    else:
        d = f"M{x1:.1f},{y1:.1f} C{(x1 + x2) / 2:.1f},{y1:.1f} {(x1 + x2) / 2:.1f},{y2:.1f} {x2:.1f},{y2:.1f}"
        mx, my = (x1 + x2) / 2, (y1 + y2) / 2
    out = [f'<path class="edge edge-{e["kind"]}" d="{d}" fill="none" stroke="{stroke}" '
           f'stroke-width="{width:.1f}"{dash} stroke-linecap="round"><title>{esc(tip)}</title></path>']
    if e["kind"] == "weight":
        out.append(f'<text class="elabel" x="{mx:.1f}" y="{my - 3:.1f}" text-anchor="middle" font-size="10" '
                   f'fill="#333">{_pct(e.get("density", 1.0))}</text>')
    return out


def _node(p, g, esc):
    """A partition as a box sized by its node count, its dead nodes as a red band, with a tooltip and counts."""
    x, y, h = g["pos"][p["name"]]
    wn = g["wn"]
    fill = "#e67e22" if p["kind"] == "merge" else _FILL.get(p["role"], "#4c78a8")
    dead, iso = p["dead"], p["isolated"]
    tip = f"{p['name']} ({p['role']}, {p['kind']}): {p['size']} nodes"
    if dead:
        tip += f", {dead} dead (on no input-output path)"
    if iso:
        tip += f", {iso} isolated (no kept edge)"
    out = [f'<g class="node"><title>{esc(tip)}</title>'
           f'<rect x="{x - wn / 2:.1f}" y="{y - h / 2:.1f}" width="{wn:.1f}" height="{h:.1f}" rx="3" '
           f'fill="{fill}" stroke="#222" stroke-width="0.6"/>']
    if dead:
        fh = max(2.0, h * dead / max(p["size"], 1))
        out.append(f'<rect class="dead" x="{x - wn / 2:.1f}" y="{y + h / 2 - fh:.1f}" width="{wn:.1f}" '
                   f'height="{fh:.1f}" rx="2" fill="#d62728"/>')
    out.append(f'<text x="{x:.1f}" y="{y - h / 2 - 4:.1f}" text-anchor="middle" font-size="10" '
               f'fill="#111">{_count(p["size"])}</text>')
    if dead or iso:
        mark = f"✕{_count(dead)}" if dead else f"○{_count(iso)}"
        out.append(f'<text class="deadlabel" x="{x:.1f}" y="{y + h / 2 + 12:.1f}" text-anchor="middle" '
                   f'font-size="10" fill="#d62728" font-weight="bold">{mark}</text>')
    out.append("</g>")
    return out


def network_svg(layout: dict, *, title: str = "network", max_height: float | None = None) -> str:
    """Inline SVG of :func:`~graphprune.analysis.partition_graph.network_layout`; scales to its container's width
    (``viewBox``), with a ``<title>`` tooltip on every node and edge and a legend."""
    esc = html.escape
    g = _geometry(layout)
    W, Hh = g["W"], g["H"]
    out = [f'<svg class="network" role="img" aria-label="{esc(title)}" viewBox="0 0 {W:.0f} {Hh:.0f}" '
           f'preserveAspectRatio="xMidYMin meet" xmlns="http://www.w3.org/2000/svg" '
           f'style="width:100%;height:auto;max-height:{max_height or max(420, Hh):.0f}px">',
           f'<title>{esc(title)}</title>']
    for e in layout["blocks"]:  # edges first, nodes on top
        out += _edge(e, g, esc)
    for p in layout["partitions"]:
        out += _node(p, g, esc)
    # partition names, rotated, under the lowest row of each column
    base = g["top"] + g["rh"] * g["R"] + 6
    for p in layout["partitions"]:
        x, _, _ = g["pos"][p["name"]]
        if p["rows"] > 1 and p["row"] < p["rows"] - 1:
            continue
        names = [q["name"] for q in layout["partitions"] if q["column"] == p["column"]]
        label = " / ".join(_short(n) for n in names)
        out.append(f'<text class="plabel" transform="translate({x:.1f},{base:.1f}) rotate(40)" font-size="10" '
                   f'fill="#333">{esc(label)}</text>')
    out.append("</svg>")
    return "".join(out)


def _pct(x):
    if x is None or not math.isfinite(x):
        return "n/a"
    if x == 0:
        return "0%"
    if x >= 0.095:
        return f"{100 * x:.0f}%"
    return f"{100 * x:.1f}%" if x >= 0.0095 else f"{100 * x:.2f}%"


def _count(n):
    n = int(n)
    if n >= 10_000_000:
        return f"{n / 1e6:.0f}M"
    if n >= 10_000:
        return f"{n / 1e3:.0f}k"
    return str(n)


def _short(name, width=24):
    return name if len(name) <= width else "…" + name[-(width - 1):]


def network_legend() -> str:
    """HTML legend of :func:`network_svg` (wraps with the page instead of being clipped with the picture)."""
    sw = "display:inline-block;vertical-align:middle;margin:0 4px 0 12px"
    items = [f'<span style="{sw};width:10px;height:14px;background:#4c78a8;border-radius:2px"></span>partition '
             '(height ~ log nodes; number = nodes)',
             f'<span style="{sw};width:10px;height:14px;background:#d62728;border-radius:2px"></span>✕ dead nodes',
             f'<span style="{sw};width:10px;height:14px;background:#e67e22;border-radius:2px"></span>merge (residual '
             'add / concat)',
             f'<span style="{sw};width:24px;border-top:2px dashed #8c6d31"></span>identity edge (not prunable)']
    items.append(f'<span style="{sw}">edge colour = effective density:</span>' + "".join(
        f'<span style="{sw};margin-left:6px;width:18px;border-top:4px solid {_color(v)}"></span>{_pct(v)}'
        for v in (0.0, 0.01, 0.1, 1.0)) + "; label = kept density")
    return '<div class="legend" style="font-size:12px;color:#333;margin:6px 0 2px">' + " ".join(items) + "</div>"
