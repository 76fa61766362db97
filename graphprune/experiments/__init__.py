"""Experiments: offline data, the model zoo, the training schedule and the accuracy-against-compression study."""

from .data import Dataset, digits2d, load_dataset, mnist1d, synthetic
from .models import MODELS, build_model
from .study import (
                    ARMS,
                    COMPRESSIONS,
                    FINETUNE,
                    METHODS,
                    POST_METHODS,
                    markdown_table,
                    paired_differences,
                    paired_table,
                    plot_study,
                    run_study,
                    summarize,
)
from .train import Schedule, evaluate, train

__all__ = ["Dataset", "load_dataset", "mnist1d", "digits2d", "synthetic", "MODELS", "build_model", "COMPRESSIONS",
           "METHODS", "POST_METHODS", "ARMS", "FINETUNE", "run_study", "summarize", "plot_study", "markdown_table",
           "paired_differences", "paired_table",
           "Schedule", "train", "evaluate"]
