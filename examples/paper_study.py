"""The paper's study: one-shot pruning at initialisation on MNIST-1D, accuracy against compression.

Full study (what the tables of the study guide, docs/source/guides/study.md, come from)::

    .venv/bin/python examples/paper_study.py --model mlp --jobs 2
    .venv/bin/python examples/paper_study.py --model conv1d --jobs 2

Every method at compression 10^0.5 ... 10^3 (steps of 10^0.25), 3 seeds, 40 epochs of the fixed schedule
(graphprune.experiments.Schedule). Resumable: runs already in data/results/study_<model>_mnist1d.csv are skipped.
This is the same as ``graphprune experiment --model mlp --jobs 2``.
"""

import sys

from graphprune.cli import main

if __name__ == "__main__":
    sys.exit(main(["experiment", *sys.argv[1:]]))
