"""Edge leverages ``|w_e| R_e`` of a block: the spectral sparsifier's sampling weights and node scores."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ...graph_resistance import effective_resistance

__all__ = ["Engine", "leverage_in_place"]


@dataclass(frozen=True)
class Engine:
    """How resistances are computed: the :func:`graphprune.effective_resistance` options of a sparsifier.

    Attributes
    ----------
    resistance : str
        The method (``"auto"``, ``"exact"``, ``"degree"``, ``"jl"``).
    dtype : torch.dtype or None
        None: float64 for CPU weights, float32 on CUDA.
    backend : str
        The exact block engine (``"auto"``, ``"scipy"``, ``"torch"``).
    record : dict or None
        Where :meth:`leverage` writes the engine each block's resistances came from (block name -> method; the
        sparsifier's ``resistance_method_``); None: not recorded.
    """

    resistance: str = "auto"
    dtype: torch.dtype | None = None
    backend: str = "auto"
    record: dict | None = field(default=None, compare=False, repr=False)

    def dtype_for(self, weight: torch.Tensor) -> torch.dtype:
        return self.dtype or (torch.float32 if weight.device.type == "cuda" else torch.float64)

    def leverage(self, graph, b, masks=None) -> torch.Tensor:
        """``|w_e| R_e`` of block ``b`` (CPU float64, 0 off the kept graph), with channel-view resistances of
        ``graph`` under ``masks``."""
        H = graph if masks is None else graph.with_masks(masks)
        R, how = effective_resistance(H, b, view="channel", method=self.resistance, dtype=self.dtype_for(b.weight),
                                      backend=self.backend, return_method=True)
        if self.record is not None:
            self.record[b.name] = how
        w = b.weight.detach().abs().to("cpu", torch.float64)
        lev = w * torch.nan_to_num(R.to("cpu", torch.float64), nan=0.0, posinf=0.0)
        return lev.masked_fill(~H.block_mask(b).cpu(), 0.0)


def leverage_in_place(R, w, avail, chunk=1 << 22):
    """``|w_e| R_e`` (CPU float64, 0 where ``R`` is NaN or +inf and off ``avail``), shaped like ``w``.

    ``R`` is the engine's own result (no other reference holds it). A float64 ``R`` becomes the leverage in its
    own storage, chunk by chunk (``R_e |w_e|`` is the same IEEE product as ``|w_e| R_e``), so a block costs one
    float64 array in all; a float32 ``R`` is widened chunk by chunk into one new float64 array. The model's
    weights are only read.
    """
    R = R.to(w.device)
    rf = R.reshape(-1)  # a view of the engine's buffer when contiguous (else a copy, equally ours)
    torch.nan_to_num_(rf, nan=0.0, posinf=0.0)
    wf, af = w.detach().reshape(-1), avail.reshape(-1)
    n = rf.numel()
    if rf.dtype == torch.float64:
        lf = rf
        for a in range(0, n, chunk):
            lf[a : a + chunk].mul_(wf[a : a + chunk].abs().to(torch.float64))
    else:
        lf = torch.empty(n, dtype=torch.float64, device=rf.device)
        for a in range(0, n, chunk):
            lf[a : a + chunk] = wf[a : a + chunk].abs()
            lf[a : a + chunk].mul_(rf[a : a + chunk])  # float32 R widens exactly
    del R, rf
    if not bool(af.all()):
        for a in range(0, n, chunk):
            lf[a : a + chunk].masked_fill_(~af[a : a + chunk], 0.0)
    return lf.reshape(w.shape).cpu()
