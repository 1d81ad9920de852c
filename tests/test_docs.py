"""The docs that are generated from code stay in step with it, and their examples with what
the code really sends.

Run with MAS_UPDATE_DOCS=1 to rewrite the option tables after changing a trait.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import uuid

import jsonschema
import pytest
import yaml
from traitlets import Type

from mas_jupyter.core.manager import MASManager
from mas_jupyter.server.app import MASExtensionApp
from mas_jupyter.server.events import SCHEMA_IDS, schema_paths
from mas_jupyter.server.openapi import openapi_document

DOCS = pathlib.Path(__file__).parent.parent / "docs"
END = "<!-- end of traits -->"
# The classes whose options configuration.md lists, and which of their traits: all of the
# engine's; the extension app's own (not those every Jupyter application inherits).
CONFIGURED = [(MASManager, False), (MASExtensionApp, True)]


def begin(cls: type) -> str:
    return f"<!-- traits: generated from {cls.__name__}, do not edit by hand -->"


def shown_default(cls: type, name: str, trait) -> str:
    if cls is MASManager and name == "root_dir":
        return "(computed)"
    if isinstance(trait, Type):
        klass = trait.default_value
        return f"{klass.__module__}.{klass.__qualname__}"
    return repr(trait.default())


def trait_table(cls: type, own: bool) -> str:
    traits = cls.class_own_traits(config=True) if own else cls.class_traits(config=True)
    rows = ["| option | type | default | what it does |", "|---|---|---|---|"]
    for name, trait in sorted(traits.items()):
        shown = shown_default(cls, name, trait)
        help_text = " ".join(trait.help.split()).replace("|", "\\|")
        rows.append(
            f"| `c.{cls.__name__}.{name}` | {type(trait).__name__} | `{shown}` | {help_text} |"
        )
    return "\n".join([begin(cls), *rows, END])


@pytest.mark.parametrize(("cls", "own"), CONFIGURED, ids=[c.__name__ for c, _ in CONFIGURED])
def test_configuration_page_lists_every_trait_with_its_default(cls, own):
    page = DOCS / "configuration.md"
    text = page.read_text()
    start = text.index(begin(cls))
    end = text.index(END, start) + len(END)
    expected = trait_table(cls, own)
    if os.environ.get("MAS_UPDATE_DOCS"):
        page.write_text(text[:start] + expected + text[end:])
        text = page.read_text()
        end = text.index(END, start) + len(END)
    assert text[start:end] == expected, "docs/configuration.md is stale: MAS_UPDATE_DOCS=1"


def test_configuration_page_says_which_classes_have_options():
    text = (DOCS / "configuration.md").read_text()
    for cls, _ in CONFIGURED:
        assert f"### {cls.__name__}" in text and f"{cls.__name__}.class_print_help()" in text


def _json_blocks(page: str) -> list[str]:
    return re.findall(r"```json\n(.*?)```", (DOCS / page).read_text(), re.S)


def test_events_page_example_is_a_real_event():
    """The /api/mas/events example has the fields a real event has: full UUIDs, the whole
    worker object (as GET .../workers/{wid}), and it passes the event's schema."""
    event = json.loads(_json_blocks("events.md")[0])
    assert set(event) == {"type", "session_id", "worker_id", "time", "activity", "worker"}
    for key in ("session_id", "worker_id"):
        assert str(uuid.UUID(event[key])) == event[key], key
    worker = event["worker"]
    worker_schema = openapi_document()["components"]["schemas"]["Worker"]
    assert set(worker) == set(worker_schema["properties"]), "the worker is not a whole Worker"
    jsonschema.validate(worker, worker_schema)
    assert worker["id"] == event["worker_id"] and worker["session_id"] == event["session_id"]
    assert worker["activity"] == event["activity"]
    schema_id = SCHEMA_IDS[event["type"]]
    for path in schema_paths():
        schema = yaml.safe_load(pathlib.Path(path).read_text())
        if schema["$id"] == schema_id:
            jsonschema.validate(event, schema)
            break
    else:
        raise AssertionError(f"no schema {schema_id}")
