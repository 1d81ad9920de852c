"""A widget lives as long as the cell output that shows it.

When a cell runs again, the front end replaces its outputs, and with them the views of the
widgets its last run made; the widgets themselves would live on (ipywidgets keeps every
widget until it is closed), each with its event subscription, its thread and its console
connection. So a widget made by a cell's run is closed when that cell runs again; widgets of
the same run stay together (two session lists in one cell).

The cell is the one the front end names in the request's metadata (`cellId`, sent by
JupyterLab, Notebook 7 and VS Code); without one (a script, a button's callback) nothing is
closed.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

_lock = threading.Lock()
_made: dict[str, list[tuple[str, weakref.ref]]] = {}  # cell id -> [(run, widget)]


def _current_run() -> tuple[str, str] | None:
    """(cell id, message id) of the cell being run, if the front end named the cell."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    kernel = getattr(get_ipython(), "kernel", None)
    if kernel is None or threading.current_thread() is not threading.main_thread():
        return None
    parent = kernel.get_parent() or {}
    cell = (parent.get("metadata") or {}).get("cellId")
    run = (parent.get("header") or {}).get("msg_id")
    if parent.get("msg_type") != "execute_request" or not cell or not run:
        return None
    return str(cell), str(run)


def close_with_cell(widget: Any) -> None:
    """Close `widget` when the cell running now runs again; close what its last run made."""
    current = _current_run()
    if current is None:
        return
    cell, run = current
    with _lock:
        earlier = _made.get(cell, [])
        kept = [(r, ref) for r, ref in earlier if r == run and ref() is not None]
        stale = [ref() for r, ref in earlier if r != run]
        _made[cell] = [*kept, (run, weakref.ref(widget))]
    for old in stale:
        if old is not None:
            old.close()


def follow_events(widget: Any, client: Any, on_event: Any, on_connect: Any) -> Any:
    """Subscribe a widget to the server's events and tie it to its cell; the subscription.
    When the server cannot be reached the widget is closed first: no half-made widget stays."""
    try:
        subscription = client.subscribe(on_event, on_connect=on_connect)
    except BaseException:
        widget.close()
        raise
    close_with_cell(widget)
    return subscription
