"""``resi demo``: the one-command demo run as a real process (short runs),
its JSON summary, its exit status, and its option checks."""

from __future__ import annotations

import io
import json

import pytest
from conftest import run_resi

from resi.demo import Cut, DemoError, DemoOptions, parse_cuts, run_demo

pytestmark = pytest.mark.timeout(120)

PATHS = ["tcp0", "tcp1", "nkn"]


def _demo(*args: str, timeout: float = 90):
    r = run_resi("demo", "--json", *args, timeout=timeout)
    try:
        summary = json.loads(r.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"no JSON summary (exit {r.returncode}):\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}")
    return r, summary


def _events(summary: dict) -> list[str]:
    return [e["event"] for e in summary["events"]]


def test_demo_survives_cuts_with_nothing_lost() -> None:
    mode = "strict"
    r, s = _demo("--duration", "8", "--concurrency", "2")
    assert r.returncode == 0, r.stderr
    assert s["passed"] is True and s["mode"] == mode
    assert s["lost"] == 0 and s["wrong"] == 0
    assert s["paths"] == PATHS and s["paths_down_at_end"] == []
    # Calls of every kind were made, in every direction of the workload.
    assert s["calls"] > 50
    assert all(row["ok"] > 0 and row["failed"] == 0 and row["wrong"] == 0 for row in s["rpcs"]), s["rpcs"]
    for d in s["directions"]:
        assert sum(row["ok"] for row in s["rpcs"] if row["direction"] == d) > 10
    # The default schedule: tcp0 and nkn cut, both went down and came back.
    assert [(c["path"], c["start"], c["end"]) for c in s["cuts"]] == [("tcp0", 0.3, 0.75), ("nkn", 0.55, 0.75)]
    ev = _events(s)
    for name in ("tcp0", "nkn"):
        assert f"restoring {name}" in ev
        down = next(i for i, e in enumerate(ev) if e.startswith(f"{name} is down"))
        assert any(e == f"{name} is up again" for e in ev[down:]), ev
    # Each call reached its simulator exactly once.
    assert all(row["served"] == row["ok"] for row in s["rpcs"]), s["rpcs"]
    assert {"CompleteDerFacilityRegistration", "SubmitDerFacilityRegistrationForm"} <= {row["rpc"] for row in s["rpcs"]}
    # Every path is up and carried data; the redundant copies were removed.
    rows = {p["name"]: p for p in s["path_stats"]}
    assert set(rows) == set(PATHS)
    assert all(p["state"] == "up" and p["bytes_sent"] > 0 for p in rows.values())
    assert rows["tcp0"]["admissions"] >= 2 and rows["nkn"]["admissions"] >= 2
    assert s["duplicates_removed"]["client"] > 0 and s["duplicates_removed"]["end"] > 0
    assert s["session_failures"] == 0 and s["mismatches"] == 0
    assert all(0 < v < 8 for v in s["longest_stall"].values())
    # Progress went to stderr, not into the JSON.
    assert "cutting tcp0" in r.stderr


async def test_run_demo_from_python_in_permissive_mode() -> None:
    progress = io.StringIO()
    s = await run_demo(DemoOptions(mode="permissive", duration=5, cuts="tcp1", concurrency=2, progress=progress))
    assert s.passed, s.format()
    assert s.mode == "permissive" and s.cuts == [Cut("tcp1", 0.30, 0.75)]
    assert s.lost == 0 and s.wrong == 0 and s.errors == []
    assert {r.direction for r in s.rpcs} == {"to-facility", "to-exchange"}
    assert all(r.served == r.ok > 0 for r in s.rpcs)
    rows = {p.name: p for p in s.path_stats}
    assert rows["tcp1"].admissions >= 2 and rows["tcp0"].admissions == 1 and rows["nkn"].transport == "nkn"
    events = [e for _, e in s.events]
    assert "cutting tcp1 (silence)" in events and "tcp1 is up again" in events
    assert "tcp1 is down" in progress.getvalue()
    assert "result: PASS" in s.format()
    assert json.loads(json.dumps(s.as_dict()))["passed"] is True


def test_demo_prints_a_summary_table() -> None:
    r = run_resi("demo", "--duration", "3", "--cut", "tcp1@20%-60%", "--no-nkn", "--quiet", timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "resi demo: strict mode" in out and "paths tcp0, tcp1" in out
    assert "duplicates removed:" in out and "longest stall:" in out
    assert "result: PASS" in out and "0 lost, 0 wrong" in out
    assert r.stderr == ""


def test_an_outage_longer_than_the_resume_timeout_fails_the_demo() -> None:
    # Every path cut for ~3 s while a session survives only 1 s with no
    # live path: the session fails, calls in flight are lost, exit status 1.
    r, s = _demo(
        "--duration", "6", "--concurrency", "2", "--no-nkn", "--tcp-fault", "reset",
        "--cut", "tcp0@25%-75%,tcp1@25%-75%", "--resume-timeout", "1", "--call-timeout", "2",
    )  # fmt: skip
    assert r.returncode == 1, r.stderr
    assert s["passed"] is False and s["lost"] > 0
    assert s["session_failures"] >= 1
    assert "result: FAIL" not in r.stdout  # JSON only on stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--cut", "tcp9"], "unknown path 'tcp9'"),
        (["--cut", "nkn", "--no-nkn"], "unknown path 'nkn'"),
        (["--cut", "tcp0@80%-20%"], "restored"),
        (["--cut", "tcp0@soon"], "is not a time"),
        (["--duration", "0"], "--duration"),
        (["--mode", "fast"], "invalid choice"),
    ],
)
def test_bad_options_exit_2(args: list[str], message: str) -> None:
    r = run_resi("demo", *args, timeout=30)
    assert r.returncode == 2
    assert message in r.stderr


def test_help_lists_demo() -> None:
    r = run_resi("--help")
    assert r.returncode == 0
    assert "demo" in r.stdout and "NKN path" in r.stdout
    r = run_resi("demo", "--help")
    assert r.returncode == 0 and "--cut" in r.stdout and "--json" in r.stdout


def test_parse_cuts() -> None:
    assert parse_cuts("none", PATHS, 30) == []
    assert parse_cuts("tcp0,nkn", PATHS, 30) == [Cut("tcp0", 0.30, 0.75), Cut("nkn", 0.55, 0.75)]
    assert parse_cuts("tcp1", PATHS, 30) == [Cut("tcp1", 0.30, 0.75)]
    assert parse_cuts("tcp1@3s-9s, nkn@50%-never", PATHS, 30) == [Cut("tcp1", 0.1, 0.3), Cut("nkn", 0.5, None)]
    assert parse_cuts("tcp0@10%", PATHS, 30) == [Cut("tcp0", 0.1, 0.75)]
    with pytest.raises(DemoError, match="named twice"):
        parse_cuts("tcp0,tcp0", PATHS, 30)
    with pytest.raises(DemoError, match="outside the run"):
        parse_cuts("tcp0@40s", PATHS, 30)
