"""The README's quickstart runs as written."""

import os
import re

import pytest

README = os.path.join(os.path.dirname(__file__), "..", "README.md")


def test_readme_quickstart_runs(tmp_path, monkeypatch, capsys):
    pytest.importorskip("torchvision")
    text = open(README).read()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has no python block"
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert "0.100" in out
    assert (tmp_path / "masks.pt").exists()
    for block in blocks[1:]:  # the later snippets continue the quickstart's session
        exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["rep"].summary["density"] == pytest.approx(0.1, abs=1e-3)


@pytest.mark.parametrize("script", ["quickstart.py", "plugin_sparsifier.py", "graph_analysis.py"])
def test_examples_run(script, monkeypatch, tmp_path, capsys):
    import runpy

    pytest.importorskip("torchvision")
    monkeypatch.chdir(tmp_path)
    path = os.path.join(os.path.dirname(__file__), "..", "examples", script)
    runpy.run_path(path, run_name="__main__")
    assert capsys.readouterr().out.strip()
