"""The ``example`` directive: a page for one script of ``examples/``, its docstring as the introduction, then its
code by ``literalinclude``.

``.. example:: quickstart.py`` in ``docs/source/examples/quickstart.rst`` renders the module docstring of
``examples/quickstart.py`` as reStructuredText, then includes the rest of the file, with the file's own line
numbers. Editing the script rebuilds the page.
"""

import ast
import os

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

#: The examples folder, relative to the documentation's source folder (docs/source).
EXAMPLES = os.path.join("..", "..", "examples")


class ExampleDirective(SphinxDirective):
    """``.. example:: name.py``: the script's docstring, then its code."""

    required_arguments = 1
    has_content = False

    def run(self):
        name = self.arguments[0]
        path = os.path.normpath(os.path.join(self.env.srcdir, EXAMPLES, name))
        if not os.path.isfile(path):
            raise self.error(f"example: no file {name!r} in examples/ ({path}).")
        self.env.note_dependency(path)
        with open(path, encoding="utf-8") as f:
            source = f.read()
        tree = ast.parse(source, filename=path)
        doc = ast.get_docstring(tree, clean=True)
        if doc is None:
            raise self.error(f"example: {name} has no module docstring to introduce its page.")
        lines = source.splitlines()
        start = tree.body[0].end_lineno  # 0-based index of the line after the docstring
        while start < len(lines) and not lines[start].strip():
            start += 1
        text = [*doc.splitlines(), "",
                f".. literalinclude:: /{EXAMPLES}/{name}".replace(os.sep, "/"),
                "   :language: python",
                f"   :lines: {start + 1}-",
                "   :lineno-match:",
                f"   :caption: examples/{name}",
                ""]
        node = nodes.container()
        nested_parse_with_titles(self.state, StringList(text, source=path), node)
        return node.children


def setup(app):
    app.add_directive("example", ExampleDirective)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
