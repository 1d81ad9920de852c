"""The docs that are generated from code stay in step with it.

Run with MAS_UPDATE_DOCS=1 to rewrite them after changing a trait.
"""

from __future__ import annotations

import os
import pathlib

from mas_jupyter.core.manager import MASManager

DOCS = pathlib.Path(__file__).parent.parent / "docs"
BEGIN = "<!-- traits: generated from MASManager, do not edit by hand -->"
END = "<!-- end of traits -->"


def trait_table() -> str:
    rows = ["| option | type | default | what it does |", "|---|---|---|---|"]
    for name, trait in sorted(MASManager.class_traits(config=True).items()):
        value = trait.default() if name != "root_dir" else None
        shown = "(computed)" if name == "root_dir" else repr(value)
        help_text = " ".join(trait.help.split()).replace("|", "\\|")
        rows.append(f"| `c.MASManager.{name}` | {type(trait).__name__} | `{shown}` | {help_text} |")
    return "\n".join([BEGIN, *rows, END])


def test_configuration_page_lists_every_trait_with_its_default():
    page = DOCS / "configuration.md"
    text = page.read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    expected = trait_table()
    if os.environ.get("MAS_UPDATE_DOCS"):
        page.write_text(text[:start] + expected + text[end:])
        text = page.read_text()
        start, end = text.index(BEGIN), text.index(END) + len(END)
    assert text[start:end] == expected, "docs/configuration.md is stale: MAS_UPDATE_DOCS=1"
