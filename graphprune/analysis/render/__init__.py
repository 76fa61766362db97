"""Rendering of connectivity reports: the data of :mod:`graphprune.analysis.report` turned into pages people read.

- :mod:`.html`: one self-contained HTML page per report or comparison (styles, table sorter, figures inlined).
- :mod:`.markdown`: the same content in markdown.
- :mod:`.figures`: matplotlib figures (densities, degree histograms, spectra), headless.
- :mod:`.network`: the layered picture of the network as inline SVG.

Renderers read a report's attributes (``frame``, ``partitions``, ``summary``, ``network``, ``options``,
``graph``) and never import the report module: data flows from the analysers through the report into here.
"""

from .figures import degree_figure, density_figure, report_figure, spectra_figure
from .html import comparison_page, report_page
from .markdown import comparison_markdown, report_markdown
from .network import network_legend, network_svg

__all__ = ["report_page", "comparison_page", "report_markdown", "comparison_markdown", "network_svg",
           "network_legend", "density_figure", "degree_figure", "spectra_figure", "report_figure"]
