"""Engine events on /api/mas/events and through jupyter_events (/api/events/subscribe)."""

from __future__ import annotations

import asyncio
import json
import pathlib

import pytest
from jupyter_events.schema import EventSchema

from mas_jupyter.core.events import EVENT_TYPES
from mas_jupyter.server.events import SCHEMA_IDS, schema_paths


async def next_json(ws, timeout=5.0):
    msg = await asyncio.wait_for(ws.read_message(), timeout)
    assert msg is not None, "the socket closed"
    return json.loads(msg)


async def test_events_socket_streams_session_events_in_order(jp_ws_fetch, api):
    ws = await jp_ws_fetch("api", "mas", "events")
    _, s = await api("POST", "sessions", body={"name": "ev"})
    await api("PATCH", "sessions", "ev", body={"task": "T-3"})
    await api("POST", "sessions", "ev", "stop")
    await api("DELETE", "sessions", "ev")
    seen = [await next_json(ws) for _ in range(4)]
    assert [e["type"] for e in seen] == [
        "session-created",
        "session-updated",
        "session-stopped",
        "session-deleted",
    ]
    for event in seen:
        assert event["session_id"] == s["id"] and event["worker_id"] is None and event["time"]
    assert seen[0]["session"]["name"] == "ev"
    assert seen[1]["session"]["task"] == "T-3"
    assert seen[2]["session"]["status"] == "stopped"
    ws.close()


async def test_two_event_clients_both_receive(jp_ws_fetch, api):
    a = await jp_ws_fetch("api", "mas", "events")
    b = await jp_ws_fetch("api", "mas", "events")
    await api("POST", "sessions", body={"name": "both"})
    assert (await next_json(a))["type"] == "session-created"
    assert (await next_json(b))["type"] == "session-created"
    a.close()
    b.close()


async def test_a_closed_events_client_is_unsubscribed(jp_ws_fetch, api, mas_app):
    before = len(mas_app.manager.events._listeners)
    ws = await jp_ws_fetch("api", "mas", "events")
    await api("GET", "sessions")  # let the server open it
    assert len(mas_app.manager.events._listeners) == before + 1
    ws.close()
    for _ in range(50):
        if len(mas_app.manager.events._listeners) == before:
            break
        await asyncio.sleep(0.02)
    assert len(mas_app.manager.events._listeners) == before


async def test_oversized_client_message_on_the_events_socket_closes_it(jp_ws_fetch):
    ws = await jp_ws_fetch("api", "mas", "events")
    await ws.write_message("x" * 100_000)
    assert await asyncio.wait_for(ws.read_message(), 5) is None
    assert ws.close_code == 1009
    ws.close()


async def test_jupyter_events_subscribe_stream_carries_mas_events(jp_ws_fetch, api):
    ws = await jp_ws_fetch("api", "events", "subscribe")
    _, s = await api("POST", "sessions", body={"name": "je"})
    while True:
        event = await next_json(ws)
        if event.get("schema_id", "").startswith("https://events.mas-jupyter.org/"):
            break
    assert event["schema_id"] == "https://events.mas-jupyter.org/mas_jupyter/session/v1"
    assert event["type"] == "session-created" and event["session_id"] == s["id"]
    assert event["session"]["name"] == "je"
    ws.close()


async def test_event_logger_listener_sees_every_session_event(jp_serverapp, api):
    got = []

    async def listener(logger, schema_id, data):
        got.append((schema_id, data["type"]))

    schema = SCHEMA_IDS["session-created"]
    jp_serverapp.event_logger.add_listener(schema_id=schema, listener=listener)
    await api("POST", "sessions", body={"name": "l"})
    await api("POST", "sessions", "l", "pause")
    await api("DELETE", "sessions", "l")
    for _ in range(50):
        if len(got) == 3:
            break
        await asyncio.sleep(0.02)
    assert got == [
        (schema, "session-created"),
        (schema, "session-updated"),
        (schema, "session-deleted"),
    ]


def test_every_event_type_has_a_registered_versioned_schema():
    assert set(SCHEMA_IDS) == set(EVENT_TYPES)
    ids = set()
    for path in schema_paths():
        schema = EventSchema(pathlib.Path(path))
        ids.add(schema.id)
        assert schema.id.endswith(f"/v{schema.version}")
        assert set(schema.properties["type"]["enum"]) <= set(EVENT_TYPES)
    assert set(SCHEMA_IDS.values()) == ids


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_engine_events_validate_against_their_schema(event_type):

    schemas = {}
    for path in schema_paths():
        s = EventSchema(pathlib.Path(path))
        schemas[s.id] = s
    event = {
        "type": event_type,
        "session_id": "5f1f0c86-5c1a-4c0e-9d0e-2c1b8c0f6a11",
        "worker_id": None if event_type.startswith("session") else "w1",
        "time": "2026-01-01T00:00:00.000+00:00",
    }
    if event_type.startswith("session"):
        event["session"] = {"id": event["session_id"], "name": "s"}
    elif event_type == "activity-changed":
        event["activity"] = "busy"
    else:
        event["worker"] = {"id": "w1", "name": "w"}
    schemas[SCHEMA_IDS[event_type]].validate(event)
