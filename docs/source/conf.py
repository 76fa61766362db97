"""Sphinx configuration of graphprune's documentation (``make docs``).

The API reference is generated from the numpydoc docstrings; the examples are pages made from ``examples/*.py``
(their docstring, then the code); the guides are Markdown pages (MyST). Nothing is fetched from the network at
build time (no intersphinx).
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "_ext"))
sys.path.insert(0, os.path.abspath(os.path.join(HERE, "..", "..")))

import graphprune  # noqa: E402

project = "graphprune"
author = "graphprune developers"
copyright = "graphprune developers"
version = release = graphprune.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.viewcode",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
    "example_page",
]

exclude_patterns = ["_build"]
# The guides are Markdown (MyST): the sections moved from the README keep their tables and figures verbatim.
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
myst_heading_anchors = 3
templates_path = []
root_doc = "index"

# autodoc: members (where a page asks for them) in source order, with base classes. autosummary only makes
# tables (no generated stubs, so a build never writes into this folder).
autodoc_default_options = {"member-order": "bysource", "show-inheritance": True}
autodoc_typehints = "none"  # the numpydoc Parameters sections say the types
autosummary_generate = False

# numpydoc: class pages list their members through autodoc, not a second time in a table.
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

html_theme = "alabaster"
html_title = f"graphprune {release}"
html_static_path = []
html_theme_options = {"description": "Treat a neural network as a multipartite graph and prune it.",
                      "fixed_sidebar": False, "page_width": "1340px", "body_max_width": "none"}  # 120-char code
