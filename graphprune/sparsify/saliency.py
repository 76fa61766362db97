"""Pruning-at-initialisation baselines as graph scorers: SNIP, GraSP and SynFlow.

Each computes one score per parameter element on a private copy of the model (with the graph's current masks
applied), so the shared density allocation (global by default, as in the papers) and the shared masks-back path
serve them like any other sparsifier. SNIP and GraSP need a data loader; SynFlow needs only the input shape.
"""

from __future__ import annotations

import copy

import torch

from ..errors import ParameterError
from .base import BlockContext, Sparsifier
from .registry import register

__all__ = ["SNIPSparsifier", "GraSPSparsifier", "SynFlowSparsifier"]


def _param(model, name):
    path, _, attr = name.rpartition(".")
    mod = model.get_submodule(path) if path else model
    return getattr(mod, attr + "_orig", None) if hasattr(mod, attr + "_orig") else getattr(mod, attr)


class _Saliency(Sparsifier):
    needs_data = False

    def __init__(self, sparsity=None, *, model=None, data=None, batches=1, allocation="global", **kwargs):
        super().__init__(sparsity, allocation=allocation, **kwargs)
        self.model = model
        self.data = data
        self.batches = batches

    def _params_repr(self):
        out = super()._params_repr()
        if out.get("model") is not None:
            out["model"] = type(out["model"]).__name__
        if out.get("data") is not None:
            out["data"] = type(out["data"]).__name__
        return out

    def _validate(self):
        d = super()._validate()
        cls = type(self).__name__
        if not isinstance(self.model, torch.nn.Module):
            raise ParameterError(f"{cls} needs the model: pass model=<the torch.nn.Module the graph was exported "
                                 f"from>. Got {type(self.model).__name__}.")
        if self.needs_data and self.data is None:
            raise ParameterError(f"{cls} is data-dependent: pass data=<a DataLoader of (input, label) batches>.")
        if not isinstance(self.batches, int) or self.batches < 1:
            raise ParameterError(f"The 'batches' parameter of {cls} must be a positive int. Got {self.batches!r}.")
        return d

    def _masked_copy(self, graph):
        """A deep copy of the model with the graph's masks multiplied into its weights (the model is untouched)."""
        m = copy.deepcopy(self.model)
        masks = graph.masks
        with torch.no_grad():
            for name in graph.params:
                p = _param(m, name)
                p.mul_(masks[name].to(p.device, p.dtype))
        return m, masks

    def _batches(self):
        for i, (x, y) in enumerate(self.data):
            if i >= self.batches:
                break
            yield x, y

    def compute_scores(self, graph) -> dict:
        raise NotImplementedError

    def prepare(self, graph):
        with torch.random.fork_rng(devices=[]):  # dropout etc. in the model copy: seeded, global state restored
            torch.manual_seed(int(self.seed) if isinstance(self.seed, int) else 0)
            self._scores = self.compute_scores(graph)

    def release(self):
        self._scores = None

    def score(self, ctx: BlockContext) -> torch.Tensor:
        s = self._scores[ctx.block.param]
        if ctx.block.param_slice is not None:
            s = s[ctx.block.param_slice[0] : ctx.block.param_slice[1]]
        return s.detach().to("cpu", torch.float64)


@register
class SNIPSparsifier(_Saliency):
    """SNIP: connection sensitivity ``|dL/dw * w|`` on ``batches`` batches, kept globally by default.

    References
    ----------
    .. [1] N. Lee, T. Ajanthan, P. H. S. Torr. "SNIP: Single-shot Network Pruning based on Connection
       Sensitivity", ICLR 2019. doi:10.48550/arXiv.1810.02340
    """

    name = "snip"
    needs_data = True

    def compute_scores(self, graph):
        m, _ = self._masked_copy(graph)
        m.train()
        params = {n: _param(m, n) for n in graph.params}
        for p in params.values():
            p.grad = None
        for x, y in self._batches():
            torch.nn.functional.cross_entropy(m(x), y).backward()
        return {n: (p.grad * p).abs().detach() if p.grad is not None else torch.zeros_like(p)
                for n, p in params.items()}


@register
class GraSPSparsifier(_Saliency):
    """GraSP: keep the weights with the largest ``w * (H g)`` (removing the top ``-w * H g`` of the paper).

    ``g`` is the loss gradient with logits divided by ``temperature`` (200, as in the paper's code), ``H g`` the
    Hessian-gradient product, both over ``batches`` batches.

    References
    ----------
    .. [1] C. Wang, G. Zhang, R. Grosse. "Picking Winning Tickets Before Training by Preserving Gradient Flow",
       ICLR 2020. doi:10.48550/arXiv.2002.07376
    """

    name = "grasp"
    needs_data = True

    def __init__(self, sparsity=None, *, temperature=200.0, **kwargs):
        super().__init__(sparsity, **kwargs)
        self.temperature = temperature

    def compute_scores(self, graph):
        m, _ = self._masked_copy(graph)
        m.train()
        names = list(graph.params)
        params = [_param(m, n) for n in names]
        batches = list(self._batches())
        g = [torch.zeros_like(p) for p in params]
        for x, y in batches:
            loss = torch.nn.functional.cross_entropy(m(x) / self.temperature, y)
            for acc, gi in zip(g, torch.autograd.grad(loss, params, allow_unused=True)):
                if gi is not None:
                    acc += gi
        for p in params:
            p.grad = None
        for x, y in batches:
            loss = torch.nn.functional.cross_entropy(m(x) / self.temperature, y)
            grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
            z = sum((gi * acc).sum() for gi, acc in zip(grads, g) if gi is not None)
            z.backward()
        return {n: (p.grad * p).detach() if p.grad is not None else torch.zeros_like(p)
                for n, p in zip(names, params)}


@register
class SynFlowSparsifier(_Saliency):
    """SynFlow: ``|dR/dw * w|`` with ``R = 1^T f_{|w|}(1)`` (the network with absolute weights on an all-ones input),
    data-free. ``iterations=1`` is one-shot; ``iterations=100`` the paper's iterative schedule, density
    ``d^(r/iterations)`` at round ``r``, recomputing the scores on the masked network each round.

    Parameters
    ----------
    input_shape : tuple of int, optional
        Shape of one example (without batch); taken from the first batch of ``data`` when omitted.

    References
    ----------
    .. [1] H. Tanaka, D. Kunin, D. L. K. Yamins, S. Ganguli. "Pruning neural networks without any data by
       iteratively conserving synaptic flow", NeurIPS 2020. doi:10.48550/arXiv.2006.05467
    """

    name = "synflow"

    def __init__(self, sparsity=None, *, iterations=1, input_shape=None, **kwargs):
        super().__init__(sparsity, **kwargs)
        self.iterations = iterations
        self.input_shape = input_shape

    def _validate(self):
        d = super()._validate()
        if not isinstance(self.iterations, int) or self.iterations < 1:
            raise ParameterError(f"The 'iterations' parameter of SynFlowSparsifier must be a positive int. "
                                 f"Got {self.iterations!r}.")
        if self.input_shape is None and self.data is None:
            raise ParameterError("SynFlowSparsifier needs input_shape=(features...) or data to read it from.")
        return d

    def compute_scores(self, graph):
        m, _ = self._masked_copy(graph)
        m = m.double().eval()
        with torch.no_grad():
            for p in m.parameters():
                p.abs_()
        shape = self.input_shape
        if shape is None:
            x, _ = next(iter(self.data))
            shape = tuple(x.shape[1:])
        params = {n: _param(m, n) for n in graph.params}
        for p in m.parameters():
            p.grad = None
        m(torch.ones((1,) + tuple(shape), dtype=torch.float64)).sum().backward()
        return {n: (p.grad * p).abs().detach() if p.grad is not None else torch.zeros_like(p)
                for n, p in params.items()}

    def sparsify(self, graph):
        d = self._validate()
        if self.iterations == 1:
            return super().sparsify(graph)
        H = graph
        masks = None
        for r in range(1, self.iterations + 1):
            step = copy.copy(self)
            step.iterations, step.sparsity, step.density = 1, None, d ** (r / self.iterations)
            masks = step.sparsify(H)
            H = graph.with_masks(masks)
        return masks

    __call__ = sparsify
