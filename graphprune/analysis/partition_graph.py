"""The layered picture of a network as data: one node per partition placed in columns, one edge per block.

Partitions (layers of neurons or channels) are placed in columns by longest path from the input (a residual branch
and its shortcut sit side by side); each block is an edge, weight blocks with their kept and effective density,
residual and concatenation (identity) blocks with their kind. Only the partition graph is described, never the
millions of weight edges. :mod:`graphprune.analysis.render.network` draws it; the report's JSON carries it.
"""

from __future__ import annotations

__all__ = ["network_layout", "layer_label"]


def layer_label(b) -> str:
    """A weight block's layer type and shape: ``"Conv2d 64→128 3×3"`` (input → output channels, kernel),
    ``"Linear 784→300"``, ``"Embedding 1000×64"``; ``"identity"`` for structural blocks."""
    if not b.is_weight:
        return "identity"
    w = tuple(int(x) for x in b.weight.shape)
    if b.layout == "linear":
        text = f"Linear {w[1]}→{w[0]}"
    elif b.layout == "embedding":
        text = f"Embedding {w[0]}×{w[1]}"
    else:
        k = "×".join(str(x) for x in w[2:])
        name = "Conv" if b.layout == "conv" else "ConvTranspose"
        text = f"{name}{len(w) - 2}d {b.n_src}→{b.n_dst} {k}"
        if b.groups != 1:
            text += f" g{b.groups}"
    if b.param_slice is not None:
        text += f" rows {b.param_slice[0]}:{b.param_slice[1]}"
    return text


def _identity_kind(dst):
    if dst.kind == "merge":
        return "concat" if "cat" in dst.name.split(".")[-1] else "residual"
    return "structural"


def network_layout(H, rep=None) -> dict:
    """Columns and counts of the partition graph: ``{"columns": int, "partitions": [...], "blocks": [...]}``.

    Each partition: ``name``, ``role``, ``kind``, ``size``, ``column`` (longest path from an input), ``row``
    (position within the column), ``dead`` (nodes on no input-output path), ``isolated``. Each block: ``name``,
    ``src``, ``dst``, ``kind`` (``"weight"``, ``"residual"``, ``"concat"`` or ``"structural"``), ``layer``, and
    for weight blocks ``density`` and ``effective_density`` (from ``rep`` when given).
    """
    parts = H.partitions
    col = {p.name: 0 for p in parts}
    index = {p.name: i for i, p in enumerate(parts)}
    for b in sorted(H.blocks, key=lambda b: index[b.dst]):
        col[b.dst] = max(col[b.dst], col[b.src] + 1)
    rows = {}
    row_of = {}
    for p in parts:
        row_of[p.name] = rows.get(col[p.name], 0)
        rows[col[p.name]] = row_of[p.name] + 1
    stats = {}
    if rep is not None:
        for r in rep.partitions.to_dict(orient="records"):
            stats[r["partition"]] = r
    per_block = {}
    if rep is not None and len(rep.frame):
        per_block = rep.frame.set_index("block")[["density", "effective_density"]].to_dict(orient="index")
    out_parts = [dict(name=p.name, role=p.role, kind=p.kind, size=p.size, column=col[p.name], row=row_of[p.name],
                      rows=rows[col[p.name]], dead=int(stats.get(p.name, {}).get("dead", 0)),
                      isolated=int(stats.get(p.name, {}).get("isolated", 0))) for p in parts]
    out_blocks = []
    for b in H.blocks:
        e = dict(name=b.name, src=b.src, dst=b.dst, layer=layer_label(b))
        if b.is_weight:
            e["kind"] = "weight"
            if b.name in per_block:
                e.update(per_block[b.name])
            else:
                m = H.block_mask(b)
                e["density"] = float(m.float().mean())
        else:
            e["kind"] = _identity_kind(H.partition(b.dst))
        out_blocks.append(e)
    return dict(columns=max(col.values()) + 1 if col else 0, partitions=out_parts, blocks=out_blocks)
