"""The ``graphprune`` command line: ``export``, ``prune``, ``report`` and ``experiment``.

Models come from a torchvision name (``resnet18``; random init, nothing is downloaded) or a
``package.module:factory`` string; ``--weights`` loads a state dict with ``torch.load(weights_only=True)``.
Data-dependent sparsifiers (snip, grasp) take ``--data``: a dataset name of :mod:`graphprune.experiments`
(``mnist1d``, ``synthetic``) or a ``package.module:loader`` factory returning an iterable of (input, label)
batches; synflow needs only the input shape. Every error, whatever its kind, is one line on stderr and exit
code 2, never a traceback. Choices come from the same lists the library validates against.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import os
import sys

__all__ = ["main"]


class _Fail(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit code 2
        raise _Fail(f"{self.prog}: {message}")


def _shape(text):
    try:
        dims = tuple(int(x) for x in text.replace("x", ",").split(",") if x)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid shape {text!r}; use e.g. 1,3,224,224") from None
    if not dims or any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(f"invalid shape {text!r}; use positive sizes, e.g. 1,3,224,224")
    return dims


def _sparsity(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid sparsity {text!r}; use a number in [0, 1)") from None
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"sparsity must be in [0, 1); got {text}")
    return v


def _factory(spec: str, what: str):
    """The callable named by ``package.module:attr``."""
    mod_name, _, attr = spec.partition(":")
    try:
        return getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as exc:
        raise _Fail(f"cannot load {what} factory {spec!r}: {exc}") from None


def load_model(spec: str, weights: str | None = None):
    """A model from a torchvision name or ``package.module:factory``; optional state dict from ``weights``."""
    import torch

    if ":" in spec:
        model = _factory(spec, "model")()
    else:
        try:
            import torchvision
        except ImportError:
            raise _Fail(f"model {spec!r} needs torchvision (pip install torchvision), or use "
                        "package.module:factory") from None
        try:
            model = torchvision.models.get_model(spec, weights=None)
        except (ValueError, KeyError):
            raise _Fail(f"unknown torchvision model {spec!r}; e.g. resnet18, mobilenet_v2, or "
                        "package.module:factory") from None
    if not isinstance(model, torch.nn.Module):
        raise _Fail(f"{spec!r} did not give a torch.nn.Module (got {type(model).__name__})")
    if weights:
        if not os.path.exists(weights):
            raise _Fail(f"weights file not found: {weights}")
        try:
            state = torch.load(weights, weights_only=True, map_location="cpu")
            model.load_state_dict(state)
        except Exception as exc:  # noqa: BLE001 - any failure is one line for the user
            raise _Fail(f"cannot load weights {weights!r}: {str(exc).splitlines()[0]}") from None
    return model.eval()


def _example(args, model):
    import torch

    shape = args.input_shape or ((1, 3, 224, 224) if ":" not in args.model else None)
    if shape is None:
        raise _Fail("--input-shape is required for package.module:factory models (e.g. --input-shape 1,784)")
    gen = torch.Generator().manual_seed(0)
    if args.input_dtype == "long":
        return torch.randint(0, 2, shape, generator=gen)
    return torch.randn(shape, generator=gen)


def _graph(args):
    import graphprune

    model = load_model(args.model, args.weights)
    return model, graphprune.from_model(model, _example(args, model), skip_unsupported=args.skip_unsupported)


def load_data(spec: str, *, batch_size: int = 128, seed: int = 0):
    """Batches of (input, label) from a dataset name of graphprune.experiments or ``package.module:loader``."""
    from ._validation import DATASETS

    if ":" in spec:
        return _factory(spec, "data")()
    if spec not in DATASETS:
        raise _Fail(f"unknown --data {spec!r}; use one of {', '.join(DATASETS)} or package.module:loader")
    from .experiments import load_dataset

    return load_dataset(spec).loader("train", batch_size=batch_size, seed=seed)


def _sparsifier_options(args, model):
    """Constructor options a data- or model-dependent sparsifier needs, from --data and --input-shape."""
    from ._validation import DATASETS, sparsifier_inputs
    from .sparsify import get_sparsifier

    inputs = sparsifier_inputs(get_sparsifier(args.sparsifier))
    opts = {}
    if inputs.model:
        opts["model"] = model
    if inputs.needs_data:
        if not args.data:
            raise _Fail(f"--sparsifier {args.sparsifier} is data-dependent: pass --data (one of the datasets "
                        f"{', '.join(DATASETS)}, or package.module:loader)")
        opts["data"] = load_data(args.data, batch_size=args.batch_size, seed=args.seed)
        if inputs.data_kind == "loader":
            opts["batches"] = args.batches or 1
        elif args.batches is not None:
            opts["data"] = list(itertools.islice(opts["data"], args.batches))
    elif args.data and inputs.data:
        opts["data"] = load_data(args.data, batch_size=args.batch_size, seed=args.seed)
    if inputs.input_shape and "data" not in opts:
        shape = args.input_shape or ((1, 3, 224, 224) if ":" not in args.model else None)
        opts["input_shape"] = tuple(shape[1:]) if shape else None
    return opts


def _write_report(rep, path):
    ext = os.path.splitext(path)[1].lower()
    if ext in (".html", ".htm"):
        rep.to_html(path)
    elif ext == ".md":
        rep.to_markdown(path)
    elif ext == ".json":
        rep.to_json(path)
    else:
        raise _Fail(f"report file {path!r} must end in .html, .md or .json")


def cmd_export(args):
    model, G = _graph(args)
    print(G.summary())
    if args.edges:
        G.edges_frame().to_csv(args.edges, index=False)
        print(f"edges written to {args.edges}")
    if args.nodes:
        G.nodes_frame().to_csv(args.nodes, index=False)
        print(f"nodes written to {args.nodes}")


def _executor(args):
    """None (local), or "ray" after connecting to the cluster named by RAY_ADDRESS (or starting a local one)."""
    if args.executor != "ray":
        return None
    try:
        import ray
    except ImportError:
        raise _Fail("--executor ray needs Ray: pip install 'graphprune[ray]'") from None
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, include_dashboard=False, log_to_driver=False)
    return "ray"


def cmd_prune_checkpoint(args):
    """``graphprune prune DIR --out NEW_DIR``: a model directory (config + safetensors) pruned shard by shard."""
    import graphprune

    if not args.out:
        raise _Fail("--out is required when the model is a checkpoint directory: the new directory to write")
    for flag in ("weights", "input_shape", "data", "report", "save_model"):
        if getattr(args, flag):
            raise _Fail(f"--{flag.replace('_', '-')} does not apply to a checkpoint directory (it is pruned from "
                        "disk into --out)")
    options = _spectral_options(args)
    if args.allocation is not None:
        options["allocation"] = args.allocation
    table = graphprune.prune_checkpoint(args.model, args.out, args.sparsifier, sparsity=args.sparsity,
                                        seed=args.seed, executor=_executor(args), progress=not args.quiet,
                                        **options)
    from .masks import table_summary

    print(f"{args.sparsifier}: {table_summary(table)}")
    print(f"pruned checkpoint written to {args.out}")


_POSITIVE = {"on": True, "off": False, "auto": "auto"}


def _spectral_options(args) -> dict:
    """The spectral-only flags (--width, --positive-paths) as sparsifier options; a clear error when the chosen
    sparsifier has no such parameter."""
    options = {}
    for flag, name, value in (("--width", "width", args.width),
                              ("--positive-paths", "positive_paths", _POSITIVE.get(args.positive_paths))):
        if value is None:
            continue
        from .sparsify import get_sparsifier

        if name not in get_sparsifier(args.sparsifier)._get_param_names():  # spectral and its subclasses
            from .errors import ParameterError

            raise ParameterError(f"{flag} applies to the spectral sparsifier only. Got --sparsifier "
                                 f"{args.sparsifier!r}; drop {flag} or use --sparsifier spectral.")
        options[name] = value
    return options


def cmd_prune(args):
    import graphprune

    if os.path.isdir(args.model):
        return cmd_prune_checkpoint(args)
    args.out = args.out or "masks.pt"
    model, G = _graph(args)
    options = _sparsifier_options(args, model)
    if args.allocation is not None:
        options["allocation"] = args.allocation
    options.update(_spectral_options(args))
    executor = _executor(args)
    if executor is not None:
        options["executor"] = executor
    from .sparsify import resolve

    sp = resolve(args.sparsifier, owner="sparsify", options=options)(
        sparsity=args.sparsity, seed=args.seed, progress=not args.quiet, **options)
    masks = graphprune.sparsify(G, sp)
    graphprune.save_masks(masks, args.out)
    H = G.with_masks(masks)
    print(f"{args.sparsifier}: density {H.density():.4f}; masks written to {args.out}")
    if args.report:
        rep = graphprune.report(G, masks, spectral=not args.no_spectral)
        _write_report(rep, args.report)
        print(f"report written to {args.report}")
    if args.save_model:
        import torch

        with torch.no_grad():  # weights repaired by the method (sparsegpt, flow), computed on its copy
            for name, w in (getattr(sp, "weights_", None) or {}).items():
                model.get_parameter(name).copy_(w)
        graphprune.apply_masks(model, G, masks)
        graphprune.make_permanent(model)
        torch.save(model.state_dict(), args.save_model)
        print(f"pruned state dict written to {args.save_model}")


def cmd_report(args):
    import graphprune

    _, G = _graph(args)
    masks = None
    if args.masks:
        if not os.path.exists(args.masks):
            raise _Fail(f"masks file not found: {args.masks}")
        masks = graphprune.load_masks(args.masks)
    rep = graphprune.report(G, masks, spectral=not args.no_spectral)
    for line in rep._summary_lines():
        print(line)
    if args.out:
        _write_report(rep, args.out)
        print(f"report written to {args.out}")


def _list(kind):
    def parse(text):
        items = [x.strip() for x in text.split(",") if x.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"empty {kind} list")
        return items
    return parse


def cmd_experiment(args):
    from .experiments import COMPRESSIONS, FINETUNE, METHODS, POST_METHODS, Schedule, run_study

    table = POST_METHODS if args.arm == "post" else METHODS
    methods = args.methods or list(table)
    unknown = [m for m in methods if m not in table]
    if unknown:
        raise _Fail(f"unknown method(s) {unknown} for --arm {args.arm}; known: {', '.join(table)}")
    if args.compare and len(args.compare) != 2:
        raise _Fail(f"--compare takes two methods A,B; got {','.join(args.compare)}")
    executor = _executor(args)
    try:
        comps = [float(c) for c in args.compressions] if args.compressions else list(COMPRESSIONS)
        seeds = [int(s) for s in args.seeds]
    except ValueError as exc:
        raise _Fail(f"bad --compressions or --seeds: {exc}") from None
    out = run_study(args.model, args.dataset, methods=methods, compressions=comps, seeds=seeds,
                    schedule=Schedule(epochs=args.epochs), out_dir=args.out, jobs=args.jobs,
                    progress=not args.quiet, spectral_metrics=not args.no_spectral, tag=args.tag, arm=args.arm,
                    finetune=Schedule(epochs=args.finetune_epochs, lr=FINETUNE.lr), executor=executor)
    with open(out["markdown"]) as f:
        print(f.read())
    if args.compare:
        import pandas as pd

        from .experiments import paired_table
        frame = pd.read_csv(out["csv"])
        frame = frame[frame.seed.isin(seeds) & frame.compression.isin(comps) & (frame.arm == args.arm)]
        print(paired_table(frame, *args.compare))
    print(f"results: {out['csv']} ({out['ran']} new runs)")
    print(f"plot:    {out['plot']}")
    print(f"table:   {out['markdown']}")


def build_parser():
    from ._validation import ALLOCATIONS, ARMS, DATASETS, EXECUTORS, INPUT_DTYPES, WIDTHS
    from .sparsify import available_sparsifiers

    p = _Parser(prog="graphprune", description="Treat a neural network as a graph and prune it with graph theory.")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)
    sub.required = True

    def common(sp):
        sp.add_argument("model", help="torchvision model name (random init) or package.module:factory; for prune "
                        "also a Hugging Face checkpoint directory (config.json + safetensors), pruned from disk")
        sp.add_argument("--weights", help="state dict to load (torch.load(weights_only=True))")
        sp.add_argument("--input-shape", type=_shape, help="example input shape, e.g. 1,3,224,224 (the default "
                        "for torchvision models)")
        sp.add_argument("--input-dtype", choices=INPUT_DTYPES, default="float",
                        help="long for token ids (embeddings)")
        sp.add_argument("--skip-unsupported", action="store_true", help="skip parametrised modules with no graph "
                        "encoding instead of failing")

    e = sub.add_parser("export", help="export a model to a multipartite graph and print its summary")
    common(e)
    e.add_argument("--edges", help="write the edge list as CSV")
    e.add_argument("--nodes", help="write the node table as CSV")
    e.set_defaults(func=cmd_export)

    pr = sub.add_parser("prune", help="sparsify a model's graph and write the masks (and a report)")
    common(pr)
    pr.add_argument("--sparsifier", default="spectral", choices=available_sparsifiers())
    pr.add_argument("--sparsity", type=_sparsity, default=0.9, help="fraction of weights to remove, in [0, 1)")
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument("--allocation", choices=ALLOCATIONS, help="density allocation over blocks (default: the "
                    "sparsifier's own: erk for spectral, uniform for the paper's spectral (--width all), random, "
                    "magnitude and degree, global for snip/grasp/synflow)")
    pr.add_argument("--width", choices=WIDTHS, help="spectral only: auto (default) chooses an effective "
                    "width below 8 edges per node; all keeps every node (the paper's per-layer sampling)")
    pr.add_argument("--positive-paths", nargs="?", const="on", choices=tuple(_POSITIVE), help="spectral only: "
                    "where nodes are removed, keep the nodes and edges that pass a signal through ReLUs at "
                    "initialisation; auto (default) where a kept layer is narrower than 4 nodes, on (the flag "
                    "alone; for pruning at initialisation) wherever nodes are removed, off never")
    pr.add_argument("--data", help="batches for data-dependent sparsifiers (snip, grasp): a dataset name ("
                    f"{', '.join(DATASETS)}) or package.module:loader")
    pr.add_argument("--batches", type=int, default=None,
                    help="batches of --data to score on (snip, grasp: default 1) or to calibrate on (wanda, "
                         "sparsegpt, ria, flow: default all)")
    pr.add_argument("--batch-size", type=int, default=128, help="batch size for a --data dataset name")
    pr.add_argument("--executor", default="local", choices=EXECUTORS, help="local: blocks in this process; "
                    "ray: one Ray task per block on the cluster named by RAY_ADDRESS (or a local one)")
    pr.add_argument("--out", help="masks file (default masks.pt; loads with torch.load(weights_only=True)); for a "
                    "checkpoint directory (config.json + safetensors) as the model: the new pruned checkpoint "
                    "directory")
    pr.add_argument("--report", help="also write a report (.html, .md or .json)")
    pr.add_argument("--no-spectral", action="store_true", help="skip the spectral metrics in the report")
    pr.add_argument("--save-model", help="also write the pruned model's state dict")
    pr.add_argument("--quiet", action="store_true", help="no progress bar")
    pr.set_defaults(func=cmd_prune)

    r = sub.add_parser("report", help="connectivity report of a model, optionally with masks")
    common(r)
    r.add_argument("--masks", help="masks file written by 'graphprune prune'")
    r.add_argument("--out", help="report file (.html, .md or .json)")
    r.add_argument("--no-spectral", action="store_true", help="skip the spectral metrics")
    r.set_defaults(func=cmd_report)

    from .experiments import MODELS

    x = sub.add_parser("experiment", help="the accuracy-against-compression study (prune at init, train, test)")
    x.add_argument("--model", default="mlp", choices=sorted(MODELS))
    x.add_argument("--dataset", default="mnist1d", choices=DATASETS)
    x.add_argument("--arm", default="init", choices=ARMS, help="init: prune at initialisation, then train; post: "
                   "prune the trained dense model, then fine-tune briefly")
    x.add_argument("--finetune-epochs", type=int, default=5, help="fine-tune epochs of the post arm (default 5)")
    x.add_argument("--methods", type=_list("method"), help="comma-separated (default: all of the arm)")
    x.add_argument("--compressions", type=_list("compression"), help="comma-separated ratios (default: 10^0.5 to "
                   "10^3 in steps of 10^0.25)")
    x.add_argument("--seeds", type=_list("seed"), default=["0", "1", "2"])
    x.add_argument("--epochs", type=int, default=40)
    x.add_argument("--jobs", type=int, default=1, help="local worker processes (with --executor local)")
    x.add_argument("--executor", default="local", choices=EXECUTORS, help="local: --jobs processes on this "
                   "machine; ray: tasks on the Ray cluster named by RAY_ADDRESS (or a local one)")
    x.add_argument("--out", default="data/results")
    x.add_argument("--tag", help="file name stem (default <model>_<dataset>)")
    x.add_argument("--no-spectral", action="store_true", help="skip the spectral metrics of each run's report")
    x.add_argument("--compare", type=_list("method"), help="two methods A,B: print their paired differences per "
                   "compression over the seeds both ran (mean A - B and a 95%% t interval)")
    x.add_argument("--quiet", action="store_true")
    x.set_defaults(func=cmd_experiment)
    return p


def _one_line(exc) -> str:
    text = " ".join(str(exc).split())  # newlines and runs of spaces folded: one line whatever the message
    return text if len(text) <= 1000 else text[:997] + "..."


def main(argv=None) -> int:
    """Run the command line; return the exit code (0, or 2 on any error, printed as one line on stderr)."""
    import logging
    import warnings

    from .errors import GraphPruneError

    logging.getLogger("graphprune").addHandler(logging.NullHandler())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            args = build_parser().parse_args(argv)
            args.func(args)
    except SystemExit as exc:  # --help, or a library calling sys.exit
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:
        print("graphprune: interrupted", file=sys.stderr)
        return 2
    except _Fail as exc:
        msg = _one_line(exc)
        print(msg if msg.startswith("graphprune") else f"graphprune: {msg}", file=sys.stderr)
        return 2
    except GraphPruneError as exc:
        print(f"graphprune: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - whatever goes wrong, the user gets one line, never a traceback
        print(f"graphprune: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
