"""The README's promises to a newcomer hold: its test command is the one CI
runs, and its Python example runs as written (it starts what it talks to)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _section(title: str) -> str:
    start = README.index(f"## {title}\n")
    end = README.find("\n## ", start + 3)
    return README[start : end if end >= 0 else None]


def _code_blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def test_the_readme_test_command_is_what_ci_runs():
    block = _code_blocks(_section("Two commands"), "sh")[0]
    lines = [line for line in block.splitlines() if line and not line.startswith("#")]
    assert len(lines) == 2, lines
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert ci[-1] == lines[1]
    assert "resi demo" in lines[0]


def test_the_readme_python_example_runs_as_written():
    (example,) = _code_blocks(_section("From Python"), "python")
    run = subprocess.run([sys.executable, "-c", example], capture_output=True, text=True, timeout=90, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip(), "the example printed nothing"
