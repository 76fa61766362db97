"""The report pages rendered in a real browser (headless Chromium from Debian's ``chromium`` package).

Each page is loaded at 1024 and 1600 px: nothing may stick out of the viewport, every table column must carry its
explanation (a tooltip and a glossary entry), and the network picture and the plots must be present and visible.
A screenshot of each page is taken; ``python tests/test_browser.py`` writes the ones the README shows to docs/.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest
import torch

import graphprune

CHROMIUM = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium is not installed (make setup installs Debian's 'chromium' as root; "
                             "or: sudo apt-get install chromium)")

# Measured inside the page once it has loaded; the result is written into the DOM, which --dump-dom prints.
_PROBE = """<script>
window.addEventListener('load', function () {
  var de = document.documentElement, cw = de.clientWidth, r = {};
  r.innerWidth = window.innerWidth; r.clientWidth = cw; r.scrollWidth = de.scrollWidth;
  r.bodyScrollWidth = document.body.scrollWidth; r.scrollHeight = de.scrollHeight;
  function visible(el) {
    var b = el.getBoundingClientRect(), s = getComputedStyle(el);
    return b.width > 0 && b.height > 0 && s.visibility !== 'hidden' && s.display !== 'none';
  }
  r.sticking_out = [];
  document.querySelectorAll('body *').forEach(function (el) {
    if (!visible(el) || el.closest('details:not([open])') || el.closest('svg') && el.tagName !== 'svg') return;
    var b = el.getBoundingClientRect();
    if (b.right > cw + 1 || b.left < -1)
      r.sticking_out.push(el.tagName + '.' + el.className + ' ' + Math.round(b.right));
  });
  r.scrolling_boxes = [];
  document.querySelectorAll('.tablewrap').forEach(function (el) {
    if (visible(el) && el.scrollWidth > el.clientWidth + 1)
      r.scrolling_boxes.push(el.scrollWidth + '>' + el.clientWidth);
  });
  r.headers = [];
  var heads = 'table.blocks thead th, table.compare thead th, table.perblock thead th';
  document.querySelectorAll(heads).forEach(function (th) {
    var key = th.getAttribute('data-key'), title = th.getAttribute('title') || '';
    r.headers.push({table: th.closest('table').className, key: key, title: title,
                    glossary: !!document.getElementById('g-' + key), text: th.textContent});
  });
  r.network = [];
  document.querySelectorAll('svg.network').forEach(function (s) {
    var b = s.getBoundingClientRect();
    r.network.push({visible: visible(s), width: b.width, height: b.height, right: b.right,
                    nodes: s.querySelectorAll('g.node').length, edges: s.querySelectorAll('path.edge').length,
                    identity: s.querySelectorAll('path.edge-residual, path.edge-concat').length,
                    dead: s.querySelectorAll('rect.dead').length});
  });
  r.images = [];
  document.querySelectorAll('figure.plot img').forEach(function (im) {
    var b = im.getBoundingClientRect();
    r.images.push({alt: im.alt, complete: im.complete, natural: im.naturalWidth, width: b.width, height: b.height,
                   right: b.right, src_inline: im.src.indexOf('data:image/png;base64,') === 0});
  });
  r.na_cells = Array.prototype.map.call(document.querySelectorAll('td.na'), function (td) { return td.textContent; });
  r.external = Array.prototype.filter.call(document.querySelectorAll('script[src], link[href], img'), function (e) {
    var u = e.getAttribute('src') || e.getAttribute('href') || ''; return u && u.indexOf('data:') !== 0; }).length;
  var th = document.querySelector('table.blocks thead th[data-key="density"]');
  if (th) {
    th.click();
    var v = Array.prototype.map.call(document.querySelectorAll('table.blocks tbody tr'), function (tr) {
      return parseFloat(tr.cells[th.cellIndex].getAttribute('data-v')); });
    r.sorted = v.every(function (x, i) { return i === 0 || v[i - 1] <= x; });
  }
  document.body.setAttribute('data-probe', JSON.stringify(r));
});
</script>"""


def _chromium(*args, timeout=120):
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
           "--no-first-run", "--disable-extensions", "--mute-audio", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def probe(page: str, width: int) -> dict:
    """Load ``page`` (a file path) at ``width`` px and return the measurements of :data:`_PROBE`."""
    with open(page, encoding="utf-8") as f:
        text = f.read()
    with tempfile.TemporaryDirectory() as tmp:
        probe_page = os.path.join(tmp, "probe.html")
        with open(probe_page, "w", encoding="utf-8") as f:
            f.write(text.replace("</body>", _PROBE + "</body>"))
        out = _chromium(f"--window-size={width},900", "--virtual-time-budget=10000", "--dump-dom",
                        f"file://{probe_page}")
    m = re.search(r'data-probe="([^"]*)"', out.stdout)
    assert m, f"the probe did not run: {out.stderr[-2000:]}"
    import html

    return json.loads(html.unescape(m.group(1)))


def screenshot(page: str, path: str, width: int = 1024, height: int | None = None) -> str:
    """A full-page PNG of ``page`` at ``width`` px (height measured first, at most 9000 px)."""
    if height is None:
        height = min(9000, int(probe(page, width)["scrollHeight"]) + 20)
    out = _chromium(f"--window-size={width},{height}", "--virtual-time-budget=10000",
                    f"--screenshot={os.path.abspath(path)}", f"file://{os.path.abspath(page)}")
    assert os.path.exists(path), out.stderr[-2000:]
    return path


def check_page(page: str, *, block_tables: bool = True, plots: int = 1) -> list[dict]:
    results = []
    for width in (1024, 1600):
        r = probe(page, width)
        assert r["innerWidth"] == width
        assert r["scrollWidth"] <= r["clientWidth"], f"page overflows at {width}px: {r['scrollWidth']}"
        assert not r["sticking_out"], f"elements outside the viewport at {width}px: {r['sticking_out'][:5]}"
        assert not r["scrolling_boxes"], f"tables scroll sideways at {width}px: {r['scrolling_boxes']}"
        assert r["headers"], "no table headers found"
        for h in r["headers"]:
            assert len(h["title"]) > 20, f"column {h['text']!r} of {h['table']} has no explanation"
            if block_tables and "blocks" in h["table"]:
                assert h["glossary"], f"column {h['key']!r} has no glossary entry"
        assert r["network"], "no network picture"
        for n in r["network"]:
            assert n["visible"] and n["width"] > 300 and n["height"] > 60 and n["right"] <= r["clientWidth"]
            assert n["nodes"] > 0 and n["edges"] > 0
        assert len(r["images"]) >= plots
        for im in r["images"]:
            assert im["complete"] and im["natural"] > 0 and im["src_inline"], im
            assert im["width"] > 300 and im["height"] > 50 and im["right"] <= r["clientWidth"], im
        assert r["external"] == 0, "the page loads something from outside itself"
        results.append(r)
    return results


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    out = tmp_path_factory.mktemp("pages")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(),
                              torch.nn.Linear(64, 10))
    G = graphprune.from_model(net, torch.randn(2, 20))
    cands = {m: graphprune.sparsify(G, m, density=0.03, seed=0) for m in ("spectral", "random", "magnitude")}
    graphprune.report(G, cands["random"]).to_html(out / "report.html")
    graphprune.compare(cands, G).to_html(out / "compare.html")
    return {"report": str(out / "report.html"), "compare": str(out / "compare.html"), "dir": out}


@needs_chromium
def test_report_page_in_chromium(pages):
    r1024, _ = check_page(pages["report"], plots=3)
    assert any(t.startswith("n/a") for t in r1024["na_cells"]) and r1024["sorted"]
    assert r1024["network"][0]["dead"] > 0  # 97% random pruning of a small MLP leaves dead neurons
    png = screenshot(pages["report"], str(pages["dir"] / "report.png"))
    assert os.path.getsize(png) > 20_000


@needs_chromium
def test_compare_page_in_chromium(pages):
    r1024, _ = check_page(pages["compare"], block_tables=False, plots=2)
    assert len(r1024["network"]) == 3
    png = screenshot(pages["compare"], str(pages["dir"] / "compare.png"))
    assert os.path.getsize(png) > 20_000


@needs_chromium
def test_resnet_page_in_chromium(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    G = graphprune.from_model(torchvision.models.resnet18(), torch.randn(1, 3, 224, 224))
    rep = graphprune.report(G, graphprune.sparsify(G, "random", sparsity=0.9, seed=0))
    rep.to_html(tmp_path / "resnet18.html")
    r1024, _ = check_page(str(tmp_path / "resnet18.html"), plots=3)
    assert r1024["network"][0]["identity"] >= 16  # two dashed inputs into each of the eight residual adds


def _shrink(path, height):
    """Keep the top ``height`` px of a screenshot, in 256 colours (a small file for the README)."""
    from PIL import Image

    with Image.open(path) as im:
        top = im.crop((0, 0, im.width, min(height, im.height))).convert("RGB")
    top.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(path, optimize=True)
    return path


def _update_docs(folder="docs"):
    """Write the screenshots the README shows: the demo's compare page and a resnet18 report (their top part:
    summary, network picture, tables and the first plots)."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
    import torchvision

    os.makedirs(folder, exist_ok=True)
    from demo import compare_page  # the demo's compare page (its methods at 100x, random init)

    page = compare_page(os.path.join(tempfile.mkdtemp(), "demo_compare.html"))
    print(_shrink(screenshot(page, os.path.join(folder, "report_compare_demo.png")), 2300))
    torch.manual_seed(0)
    G = graphprune.from_model(torchvision.models.resnet18(), torch.randn(1, 3, 224, 224))
    rep = graphprune.report(G, graphprune.sparsify(G, "random", sparsity=0.9, seed=0))
    page = os.path.join(tempfile.mkdtemp(), "resnet18.html")
    rep.to_html(page)
    print(_shrink(screenshot(page, os.path.join(folder, "report_resnet18.png")), 2000))


if __name__ == "__main__":
    _update_docs(sys.argv[1] if len(sys.argv) > 1 else "docs")
