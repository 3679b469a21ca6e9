"""Every notebook under notebooks/ runs top to bottom, and is committed with
its outputs (so it reads on a repository page)."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
IDS = [p.stem for p in NOTEBOOKS]


def _errors(nb) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]


def test_the_three_notebooks_are_there():
    assert {"quickstart", "failover", "market_round"} <= set(IDS), IDS


@pytest.mark.timeout(300)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_runs(path: Path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    assert not _errors(nb), _errors(nb)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_is_committed_with_outputs(path: Path):
    """Every code cell ran, in order, in one clean run, without an error; a
    notebook that draws with matplotlib carries its figures as PNG."""
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    counts = [c.get("execution_count") for c in code]
    assert counts == list(range(1, len(code) + 1)), f"{path.name}: execution counts {counts}; re-run it top to bottom and save"
    assert not _errors(nb), f"{path.name} was saved with an error output"
    assert any(c.get("outputs") for c in code), f"{path.name} has no outputs"
    draws = sum("plt.show()" in c.source for c in code)
    pngs = sum("image/png" in o.get("data", {}) for c in code for o in c.get("outputs", []))
    assert pngs >= draws, f"{path.name}: {draws} cells draw, {pngs} PNG outputs"
