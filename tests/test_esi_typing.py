"""mypy --strict over ESI code: resi.esi and resi.aio themselves, a realistic
user script (tests/esi_typing/user_ok.py, must pass) and a deliberately
wrong one (user_wrong.py: exactly the errors its ``# E: code`` comments mark).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SCRIPTS = HERE / "esi_typing"
MARK = re.compile(r"  # E: ([a-z-]+(?: [a-z-]+)*)$")
REPORTED = re.compile(r"^[^:]+:(\d+): error: .*\[([\w-]+)\]$")


def mypy(*args: str, cache: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-color-output", "--cache-dir", str(cache), *args],
        capture_output=True, text=True, timeout=240, cwd=cwd,
    )


def expected_errors(path: Path) -> set[tuple[int, str]]:
    marks = set()
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if mark := MARK.search(line):
            marks |= {(number, code) for code in mark[1].split()}
    return marks


def test_mypy_strict_on_esi_code(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    own = mypy("-p", "resi.esi", "-p", "resi.aio", cache=cache, cwd=ROOT / "python")
    assert own.returncode == 0, own.stdout + own.stderr

    ok = mypy(str(SCRIPTS / "user_ok.py"), cache=cache, cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr

    wrong = mypy(str(SCRIPTS / "user_wrong.py"), cache=cache, cwd=tmp_path)
    assert wrong.returncode == 1, wrong.stdout + wrong.stderr
    reported = {(int(m[1]), m[2]) for m in map(REPORTED.match, wrong.stdout.splitlines()) if m}
    expected = expected_errors(SCRIPTS / "user_wrong.py")
    assert len(expected) >= 10
    assert reported == expected, wrong.stdout
