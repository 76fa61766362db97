"""The documentation site (``make docs``): it builds with warnings as errors, and it documents what it must.

The site is built once, in a temporary folder, by ``python -m sphinx -W --keep-going`` in a subprocess (the same
command as ``make docs``, so a warning in any docstring fails here). The references of the checks below come from
the package and the file system (the registry, ``__all__``, ``examples/*.py``), not from the site.
"""

import ast
import re
import subprocess
import sys
from html import unescape
from pathlib import Path

import pytest

pytest.importorskip("sphinx")
pytest.importorskip("numpydoc")
pytest.importorskip("myst_parser")

import graphprune  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "docs" / "source"

#: Registered names that are aliases of a documented class, not sparsifiers of their own (none since
#: "spectral-width" went, see CHANGELOG.md).
ALIASES: set = set()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The built site's folder; the build's own output is in the failure message."""
    out = tmp_path_factory.mktemp("docs")
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
           "-d", str(out / "doctrees"), str(SOURCE), str(out / "html")]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, f"sphinx failed (exit {run.returncode}):\n{run.stderr[-6000:]}"
    return out / "html"


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _plain(html: str) -> str:
    """The page's text: tags dropped, entities and typographic quotes undone, spaces collapsed."""
    text = unescape(re.sub(r"<[^>]+>", "", html)).translate({0x2018: "'", 0x2019: "'", 0x201C: '"', 0x201D: '"'})
    return " ".join(text.split())


def _ids(site) -> set:
    """Every documented object's full name, from the anchors of the API pages."""
    ids = set()
    for page in (site / "api").glob("*.html"):
        ids.update(re.findall(r'id="(graphprune(?:\.\w+)+)"', _text(page)))
    return ids


def test_api_pages_exist(site):
    pages = {p.stem for p in (SOURCE / "api").glob("*.rst")}
    assert {"index", "graph", "export", "convert", "resistance", "sparsify", "calibrate", "prune", "analysis",
            "experiments", "errors"} <= pages
    for name in pages:
        assert (site / "api" / f"{name}.html").is_file(), name
    assert (site / "index.html").is_file()
    assert (site / "py-modindex.html").is_file()


def test_core_objects_are_documented(site):
    graph = _text(site / "api" / "graph.html")
    assert 'id="graphprune.graph.MultipartiteGraph"' in graph
    assert 'id="graphprune.graph.MultipartiteGraph.with_masks"' in graph  # methods too
    sparsify = _text(site / "api" / "sparsify.html")
    for cls in ("calibrated.SparseGPTSparsifier", "calibrated.WandaSparsifier", "calibrated.RIASparsifier",
                "calibrated.FlowSparsifier", "score.ScoreSparsifier", "spectral.SpectralSparsifier"):
        assert f'id="graphprune.sparsify.{cls}"' in sparsify, cls
    assert "SparseGPTSparsifier" in _plain(sparsify)


def test_every_public_name_is_documented(site):
    ids = _ids(site)
    missing = [name for name in graphprune.__all__
               if name != "errors" and not any(i == name or i.endswith("." + name) for i in ids)]
    assert not missing, f"graphprune.__all__ names with no entry in the API reference: {missing}"


def test_every_shipped_sparsifier_is_documented(site):
    ids = _ids(site)
    missing = []
    for name in graphprune.available_sparsifiers():
        cls = graphprune.get_sparsifier(name)
        if name in ALIASES or not cls.__module__.startswith("graphprune."):
            continue
        if f"{cls.__module__}.{cls.__qualname__}" not in ids:
            missing.append(f"{name} ({cls.__module__}.{cls.__qualname__})")
    assert not missing, f"registered sparsifiers missing from api/sparsify.rst: {missing}"


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "examples").glob("*.py")))
def test_every_example_has_a_page(site, script):
    path = ROOT / "examples" / script
    page = site / "examples" / f"{path.stem}.html"
    assert page.is_file(), f"examples/{script} has no page: add docs/source/examples/{path.stem}.rst"
    text = _plain(_text(page))
    tree = ast.parse(path.read_text(encoding="utf-8"))
    intro = " ".join(ast.get_docstring(tree).replace("``", "").split()[:6])
    assert intro in text, f"the page of examples/{script} does not start from its docstring ({intro!r})"
    for node in tree.body:  # the code is on the page
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            assert f"def {node.name}" in text or f"class {node.name}" in text, node.name
    assert script in (site / "examples" / "index.html").read_text(encoding="utf-8").replace(".html", ".py")


def test_every_guide_is_a_page(site):
    guides = sorted(p.stem for p in (SOURCE / "guides").glob("*.md"))
    assert {"study", "large_models", "sparsification", "trained", "structured", "reports"} <= set(guides)
    index = _text(site / "guides" / "index.html")
    for name in guides:
        assert (site / "guides" / f"{name}.html").is_file(), name
        assert f'href="{name}.html"' in index, f"guides/{name}.md is not in the guides' toctree"
    assert (site / "_images" / "study_lm.png").is_file()  # the figures moved with their sections


def test_readme_is_a_front_page():
    """The README is short and links to guide pages that exist; the reference lives in the guides."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text) < 8000, f"README.md has {len(text)} characters: move reference material to a guide"
    for needed in ("make demo", "make test", "make docs", "```python"):
        assert needed in text, needed
    links = re.findall(r"\]\((docs/source/guides/[\w.]+\.md)\)", text)
    assert len(links) >= 6, links
    for link in links:
        assert (ROOT / link).is_file(), link
    linked = {Path(link).stem for link in links}
    assert linked == {p.stem for p in (SOURCE / "guides").glob("*.md")}, "a guide page is not linked from README"
