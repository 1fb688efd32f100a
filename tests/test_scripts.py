"""Every ``scripts/*.py`` answers ``--help``: its imports resolve and its parser builds.

One child process runs each script as ``__main__`` with ``--help`` in turn (torch is imported once, not once per
script) and reports each one's exit code and output; each script is then a test of its own.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT

SCRIPTS = sorted(path.name for path in (ROOT / "scripts").glob("*.py"))

CHILD = """\
import contextlib, io, json, runpy, sys, traceback
results = {}
for name in sys.argv[1:]:
    out, err = io.StringIO(), io.StringIO()
    sys.argv = [f"scripts/{name}", "--help"]
    code = "ran to the end without exiting"
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            runpy.run_path(f"scripts/{name}", run_name="__main__")
    except SystemExit as stop:
        code = stop.code or 0
    except BaseException:
        code = "raised"
        err.write(traceback.format_exc())
    results[name] = {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}
sys.__stdout__.write(json.dumps(results))
"""


@pytest.fixture(scope="module")
def help_results() -> dict[str, dict]:
    proc = subprocess.run([sys.executable, "-c", CHILD, *SCRIPTS], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_every_script_is_checked():
    assert "cpu_costs.py" in SCRIPTS and len(SCRIPTS) >= 5


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_exits_0_with_the_usage(help_results, script):
    result = help_results[script]
    assert result["code"] == 0, f"{script} --help: {result['code']}\n{result['stderr'][-3000:]}"
    assert result["stdout"].strip().startswith("usage:"), result["stdout"][:500]
