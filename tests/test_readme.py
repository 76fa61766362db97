"""The README's quickstart and every Python snippet of the guides (docs/source/guides/*.md) run as written.

A guide page that says it continues the quickstart's session runs after the README's quickstart block, in the same
namespace; the other pages run on their own. The snippets of one page share a namespace, in page order.
"""

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
GUIDES = ROOT / "docs" / "source" / "guides"
#: The sentence by which a guide page says its snippets continue the quickstart's session.
CONTINUES = "continue the session of the front page's quickstart"


def _blocks(path: Path) -> list:
    return re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S)


def _run(blocks, namespace, where: str):
    for block in blocks:
        exec(compile(block, where, "exec"), namespace)


def _pages() -> list:
    return sorted(p.name for p in GUIDES.glob("*.md") if _blocks(p))


def test_readme_quickstart_runs(tmp_path, monkeypatch, capsys):
    pytest.importorskip("torchvision")
    blocks = _blocks(README)
    assert blocks, "README has no python block"
    monkeypatch.chdir(tmp_path)
    namespace = {}
    _run(blocks[:1], namespace, "README.md")
    out = capsys.readouterr().out
    assert "0.100" in out
    assert (tmp_path / "masks.pt").exists()
    _run(blocks[1:], namespace, "README.md")  # the later snippets continue the quickstart's session
    assert namespace["rep"].summary["density"] == pytest.approx(0.1, abs=1e-3)
    assert (tmp_path / "report.html").exists()


def test_the_moved_snippets_are_all_run():
    """The README's snippets before the cut (11) are on the guide pages now, each run by the test below."""
    assert len(_pages()) >= 6, _pages()
    assert sum(len(_blocks(GUIDES / p)) for p in _pages()) >= 10


@pytest.mark.parametrize("page", _pages())
def test_guide_snippets_run(page, tmp_path, monkeypatch, capsys):
    pytest.importorskip("torchvision")
    path = GUIDES / page
    monkeypatch.chdir(tmp_path)
    namespace = {}
    if CONTINUES in " ".join(path.read_text(encoding="utf-8").split()):
        _run(_blocks(README)[:1], namespace, "README.md")
    _run(_blocks(path), namespace, f"docs/source/guides/{page}")
    if page == "reports.md":
        assert namespace["rep"].summary["density"] == pytest.approx(0.1, abs=1e-3)
        assert (tmp_path / "report.html").exists() and (tmp_path / "compare.html").exists()


@pytest.mark.parametrize("script", ["quickstart.py", "plugin_sparsifier.py", "graph_analysis.py"])
def test_examples_run(script, monkeypatch, tmp_path, capsys):
    import runpy

    pytest.importorskip("torchvision")
    monkeypatch.chdir(tmp_path)
    path = os.path.join(os.path.dirname(__file__), "..", "examples", script)
    runpy.run_path(path, run_name="__main__")
    assert capsys.readouterr().out.strip()
