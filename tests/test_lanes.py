"""The test lanes: tests that start other processes carry a lane marker, and `-m unit` leaves them out."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
#: what a test that runs fmadapt in another process calls (directly or through these conftest helpers)
OTHER_PROCESS = ("subprocess", "sys.executable", "predict_in_a_fresh_process", "multiprocessing")


def _marks(node: ast.FunctionDef | ast.Module) -> set[str]:
    out = set()
    decorators = node.decorator_list if isinstance(node, ast.FunctionDef) else [
        s.value for s in node.body if isinstance(s, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "pytestmark" for t in s.targets)]
    for d in decorators:
        text = ast.unparse(d)
        out |= {m for m in ("slow", "integration", "distributed") if f"pytest.mark.{m}" in text}
    return out


def test_every_test_that_starts_another_process_is_in_a_lane():
    unmarked = []
    for path in sorted(TESTS.glob("test_*.py")):
        src = path.read_text()
        tree = ast.parse(src)
        module = _marks(tree)
        functions = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
        # the module's own helpers that start a process count as such: f"{name}(" in a test's body
        starters = OTHER_PROCESS + tuple(f"{n.name}(" for n in functions if not n.name.startswith("test_") and any(
            h in (ast.get_source_segment(src, n) or "") for h in OTHER_PROCESS))
        for node in functions:
            if node.name.startswith("test_") and path.name != "test_lanes.py":
                body = ast.get_source_segment(src, node) or ""
                if any(h in body for h in starters) and not (module | _marks(node)):
                    unmarked.append(f"{path.name}::{node.name}")
    assert not unmarked, f"mark these @pytest.mark.integration (or distributed): {unmarked}"


@pytest.mark.integration
def test_the_unit_lane_leaves_out_the_other_lanes():
    r = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "unit", str(TESTS)],
                       capture_output=True, text=True, timeout=300, cwd=TESTS.parent)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    ids = [line for line in r.stdout.splitlines() if "::" in line]
    assert any("test_group_by_length.py::" in i for i in ids)
    for other in ("test_distributed.py::", "test_resume.py::test_kill_9_in_epoch_2",
                  "test_backbones.py::test_minilm_matches_sentence_transformers_encode",
                  "test_lanes.py::test_the_unit_lane"):
        assert not any(other in i for i in ids), other
    assert len(ids) > 500
