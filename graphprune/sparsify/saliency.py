"""Pruning-at-initialisation baselines as graph scorers: SNIP, GraSP and SynFlow.

Each computes one score per parameter element on a private copy of the model (with the graph's current masks
applied), so the shared density allocation (global by default, as in the papers) and the shared masks-back path
serve them like any other sparsifier. SNIP and GraSP need a data loader; SynFlow needs only the input shape.

A block with no non-zero weight (a zero-initialised head) scores 0 on every edge. Its budget is the allocation's
(under the default global allocation, what its scores of 0 earn against the other blocks' scores, often nothing);
the edges it keeps are chosen uniformly at random from its own seed stream, with a RuntimeWarning naming it (the
shared rule of :mod:`graphprune.sparsify.base`). A zero block also zeroes every gradient that flows through it,
so the other blocks' scores can be 0 too (SynFlow's product over paths always is, with a zero head): they are then
ranked by position, as any ties.
"""

from __future__ import annotations

import copy
import numbers

import torch

from .._validation import SALIENCY_MODES, InstanceOf, Interval, Options, Shape, torch_seed
from ..calibrate import check_model, masked_copy, param_of
from ..errors import ParameterError
from .base import BlockContext
from .registry import register
from .score import ScoreSparsifier

__all__ = ["SNIPSparsifier", "GraSPSparsifier", "SynFlowSparsifier"]


_param = param_of


class _Saliency(ScoreSparsifier):
    needs_data = False
    distributable = False  # scores come from the whole model's forward and backward passes

    def _why_serial(self):
        return "its scores come from forward and backward passes of the whole model"

    _parameter_constraints = {
        "model": [InstanceOf(torch.nn.Module, "the torch.nn.Module the graph was exported from")],
        "batches": [Interval(numbers.Integral, 1, None)],
    }

    def __init__(self, sparsity=None, *, model=None, data=None, batches=1, allocation="global", **kwargs):
        super().__init__(sparsity, allocation=allocation, **kwargs)
        self.model = model
        self.data = data
        self.batches = batches

    def _validate_extra(self):
        cls = type(self).__name__
        if self.needs_data and (self.data is None or not hasattr(self.data, "__iter__") or isinstance(self.data, str)):
            raise ParameterError(f"The 'data' parameter of {cls} must be an iterable of (input, label) batches, "
                                 f"e.g. a torch DataLoader. Got {self.data!r} instead; {cls} is data-dependent.")

    def _check_model(self, graph):
        """The model must be the graph's: every graph parameter, same shape."""
        check_model(self.model, graph, owner=type(self).__name__)

    def _masked_copy(self, graph):
        """A deep copy of the model with the graph's masks multiplied into its weights (the model is untouched)."""
        return masked_copy(self.model, graph)

    def _batches(self):
        cls = type(self).__name__
        out = []
        for i, batch in enumerate(self.data):
            if i >= self.batches:
                break
            if not (isinstance(batch, (tuple, list)) and len(batch) >= 2 and isinstance(batch[0], torch.Tensor)
                    and isinstance(batch[1], torch.Tensor)):
                raise ParameterError(f"The 'data' parameter of {cls} must yield (input, label) tensor pairs. "
                                     f"Its batch {i} is {_describe(batch)} instead.")
            out.append((batch[0], batch[1]))
        if not out:
            raise ParameterError(f"The 'data' parameter of {cls} yielded no batch: an empty loader gives all-zero "
                                 "scores. Pass a non-empty DataLoader.")
        return out

    def _forward(self, m, x):
        try:
            return m(x)
        except Exception as exc:  # the user's data or shape does not fit the model
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            what = "input_shape" if getattr(self, "input_shape", None) is not None and self.data is None else "data"
            raise ParameterError(f"The '{what}' parameter of {type(self).__name__} does not fit the model: the "
                                 f"forward pass on an input of shape {tuple(x.shape)} failed with "
                                 f"{type(exc).__name__}: {first}") from exc

    def compute_scores(self, graph) -> dict:
        raise NotImplementedError

    def prepare(self, graph):
        self._check_model(graph)
        with torch.random.fork_rng(devices=[]):  # dropout etc. in the model copy: seeded, global state restored
            torch.manual_seed(torch_seed(self.seed, owner=type(self).__name__))
            self._scores = self.compute_scores(graph)

    def release(self):
        self._scores = None

    def score(self, ctx: BlockContext) -> torch.Tensor:
        s = self._scores[ctx.block.param]
        s = ctx.block.rows(s)
        return s.detach().to("cpu", torch.float64)


class _DataSaliency(_Saliency):
    """SNIP and GraSP: data-dependent scores, with the model copy in train mode (default) or eval mode."""

    needs_data = True
    _parameter_constraints = {"mode": [Options(SALIENCY_MODES)]}

    def __init__(self, sparsity=None, *, mode="train", **kwargs):
        super().__init__(sparsity, **kwargs)
        self.mode = mode

    def _scoring_copy(self, graph):
        m, _ = self._masked_copy(graph)
        m.train(self.mode == "train")
        return m


@register
class SNIPSparsifier(_DataSaliency):
    """SNIP: connection sensitivity ``|dL/dw * w|`` on ``batches`` batches, kept globally by default.

    Parameters
    ----------
    model : torch.nn.Module
        The model the graph was exported from (scored on a private copy; never modified).
    data : iterable of (input, label)
        Batches for the loss (a DataLoader); the first ``batches`` are used.
    batches : int, default 1
    mode : {"train", "eval"}, default "train"
        Mode of the model copy while scoring. ``"train"`` is the paper's setting (BatchNorm uses batch
        statistics); ``"eval"`` freezes BatchNorm statistics and disables dropout.

    References
    ----------
    .. [1] N. Lee, T. Ajanthan, P. H. S. Torr. "SNIP: Single-shot Network Pruning based on Connection
       Sensitivity", ICLR 2019. doi:10.48550/arXiv.1810.02340
    """

    name = "snip"

    def compute_scores(self, graph):
        m = self._scoring_copy(graph)
        params = {n: _param(m, n) for n in graph.params}
        for p in params.values():
            p.grad = None
        for x, y in self._batches():
            _loss(self, self._forward(m, x), y).backward()
        return {n: (p.grad * p).abs().detach() if p.grad is not None else torch.zeros_like(p)
                for n, p in params.items()}


@register
class GraSPSparsifier(_DataSaliency):
    """GraSP: keep the weights with the largest ``w * (H g)`` (removing the top ``-w * H g`` of the paper).

    ``g`` is the loss gradient with logits divided by ``temperature`` (200, as in the paper's code), ``H g`` the
    Hessian-gradient product, both over ``batches`` batches. ``model``, ``data``, ``batches`` and ``mode`` as
    for :class:`SNIPSparsifier`.

    References
    ----------
    .. [1] C. Wang, G. Zhang, R. Grosse. "Picking Winning Tickets Before Training by Preserving Gradient Flow",
       ICLR 2020. doi:10.48550/arXiv.2002.07376
    """

    name = "grasp"
    _parameter_constraints = {"temperature": [Interval(numbers.Real, 0, None, closed="neither")]}

    def __init__(self, sparsity=None, *, temperature=200.0, **kwargs):
        super().__init__(sparsity, **kwargs)
        self.temperature = temperature

    def compute_scores(self, graph):
        m = self._scoring_copy(graph)
        names = list(graph.params)
        params = [_param(m, n) for n in names]
        batches = self._batches()
        g = [torch.zeros_like(p) for p in params]
        for x, y in batches:
            loss = _loss(self, self._forward(m, x) / self.temperature, y)
            for acc, gi in zip(g, torch.autograd.grad(loss, params, allow_unused=True)):
                if gi is not None:
                    acc += gi
        for p in params:
            p.grad = None
        for x, y in batches:
            loss = _loss(self, m(x) / self.temperature, y)
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
    _parameter_constraints = {"iterations": [Interval(numbers.Integral, 1, None)], "input_shape": [Shape(), None]}

    def __init__(self, sparsity=None, *, iterations=1, input_shape=None, **kwargs):
        super().__init__(sparsity, **kwargs)
        self.iterations = iterations
        self.input_shape = input_shape

    def _validate_extra(self):
        if self.input_shape is None and self.data is None:
            raise ParameterError("The 'input_shape' parameter of SynFlowSparsifier must be a tuple of positive ints "
                                 "(one example's shape, without the batch dimension) when no data is given. Got "
                                 "None instead.")

    def compute_scores(self, graph):
        m, _ = self._masked_copy(graph)
        m = m.double().eval()
        with torch.no_grad():
            for p in m.parameters():
                p.abs_()
        shape = self.input_shape
        if shape is None:
            x, _ = self._batches()[0]
            shape = tuple(x.shape[1:])
        params = {n: _param(m, n) for n in graph.params}
        for p in m.parameters():
            p.grad = None
        self._forward(m, torch.ones((1,) + tuple(shape), dtype=torch.float64)).sum().backward()
        return {n: (p.grad * p).abs().detach() if p.grad is not None else torch.zeros_like(p)
                for n, p in params.items()}

    def sparsify(self, graph):
        if self.iterations == 1 or not isinstance(self.iterations, int):
            return super().sparsify(graph)
        d = self.validate()
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


def _describe(batch) -> str:
    if isinstance(batch, (tuple, list)):
        return f"a {type(batch).__name__} of {len(batch)} ({', '.join(type(x).__name__ for x in batch[:3])})"
    return f"a {type(batch).__name__}"


def _loss(sp, logits, y):
    try:
        return torch.nn.functional.cross_entropy(logits, y)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ParameterError(f"The 'data' parameter of {type(sp).__name__} must yield class labels that fit the "
                             f"model's output (cross-entropy of logits {tuple(logits.shape)} against labels "
                             f"{tuple(y.shape)} of dtype {y.dtype} failed: {first}).") from exc
