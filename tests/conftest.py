import os
import sys

import pytest
from hypothesis import HealthCheck, settings

sys.path.insert(0, os.path.dirname(__file__))

settings.register_profile("ci", derandomize=True, deadline=None, max_examples=40,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci")


def _has_graph_tool():
    try:
        import graph_tool  # noqa: F401
        return True
    except ImportError:
        return False


HAS_GT = _has_graph_tool()
needs_graph_tool = pytest.mark.skipif(
    not HAS_GT, reason="graph-tool is not installed (sudo apt-get install python3-graph-tool; make setup does it)")
