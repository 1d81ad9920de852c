"""The example notebooks, run end to end by a real kernel against the test server.

Each runs from a folder inside the server's root, so the kernel finds the server the way a
notebook opened in JupyterLab does; every cell's output is checked.
"""

from __future__ import annotations

import pathlib
import shutil

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = pathlib.Path(__file__).resolve().parents[2] / "notebooks"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

# For each notebook: (a piece of a cell's source, what its output must contain).
EXPECTED = {
    "quickstart": [
        ("client = mas.connect()", "the server of this directory"),
        ("%mas backends", "demo"),
        ("%mas new quickstart", "<Session quickstart quick active task='readme'"),
        ("%mas new quickstart", "demo(idle)"),
        ("%mas list", "quickstart"),
        ("%%mas send", "reply: Summarise what a quickstart is for. Keep it to two sentences (11"),
        ("%mas send count", "reply: count the words in this message (6 words, 1 lines)"),
        ("%mas screen", "demo>"),
        ("%mas log", "--- you"),
        ("%mas activity", "message-sent"),
        ('client.send("/ask")', "waiting - Proceed with the change? (yes/no)"),
        ('client.send("yes")', "ok: change applied"),
        ("%mas add --terminal", "<Worker shell terminal/shell"),
        ("%mas console shell", WIDGET_VIEW),
        ("with mas.use", "'reply: hello from Python (3 words, 1 lines)'"),
        ("%mas pause", "paused"),
        ("%mas resume", "active"),
        ("%mas stop", "stopped"),
        ("%mas delete", "deleted session quickstart and its workspace"),
    ],
    "widgets-tour": [
        ("panel = SessionList()", WIDGET_VIEW),
        ("print(panel.text())", "tour-qa"),
        ("badge = ActivityBadge", WIDGET_VIEW),
        ('"/ask"', "Proceed with the change? (yes/no)"),
        ('"yes"', "ok: change applied"),
        ("console = WorkerConsole", WIDGET_VIEW),
        ("what is on your screen", "reply: what is on your screen?"),
        ("widget.close()", "no sessions"),
    ],
    "multi-agent-analysis": [
        ("csv.writer", "north,2024-01,120,2400.0"),
        ("sessions = {}", "analyst-south"),
        ("asyncio.gather", "analyst-north: reply: Review sales.csv for north: units [120, 135"),
        ("asyncio.gather", "analyst-south: reply: Review sales.csv for south: units [200, 180"),
        ("<table>", "<pre>reply: Review sales.csv"),
        ("/write summary.md", "north grows 25 percent in a quarter"),
        ('client.activities("analyst-north")', "message-sent"),
        ("data.unlink()", "no sessions"),
    ],
}


def output_text(cell) -> str:
    """Everything a cell showed: streams, and each display's text, Markdown, HTML or view."""
    parts = []
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream":
            parts.append(out["text"])
        elif out["output_type"] in ("display_data", "execute_result"):
            for mime, value in out["data"].items():
                parts.append(mime if mime == WIDGET_VIEW else str(value))
        elif out["output_type"] == "error":
            parts.append(f"{out['ename']}: {out['evalue']}")
    return "\n".join(parts)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_runs_end_to_end(name, server_env):
    folder = server_env.root / "notebooks"
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.ipynb"
    shutil.copy(NOTEBOOKS / path.name, path)
    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
    ).execute()
    cells = [c for c in nb.cells if c.cell_type == "code"]
    for cell in cells:
        errors = [o for o in cell.get("outputs", []) if o["output_type"] == "error"]
        assert not errors, f"{cell.source[:60]!r} failed: {output_text(cell)}"
        assert "Traceback" not in output_text(cell)
    for snippet, expected in EXPECTED[name]:
        matching = [c for c in cells if snippet in c.source]
        assert matching, f"no cell of {name} has {snippet!r}"
        shown = "\n".join(output_text(c) for c in matching)
        assert expected in shown, f"{snippet!r} did not show {expected!r}:\n{shown[:2000]}"
    assert server_env.api("GET", "mas/sessions") == []  # each notebook tidies up
