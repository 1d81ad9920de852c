"""A message whose reply is awaited waits for its turn: the agent no longer busy, no other
such message being answered. Before, it was typed ahead into a busy agent, and the reply
returned was the end of the work the agent was busy with."""

from __future__ import annotations

import asyncio

import pytest

from mas_jupyter.core.errors import ConflictError
from tests.core.test_workers import FAST, until


async def _idle_demo(manager):
    await manager.create_session({"kind": "quick", "name": "s"})
    await manager.create_worker("s", {"name": "bot", "backend": "demo", "env": FAST})
    await until(lambda: manager.get_worker("s", "bot")["activity"] == "idle", what="idle")


def _sent(manager) -> list[str]:
    return [
        a["detail"]["text"] for a in manager.list_activities("s") if a["type"] == "message-sent"
    ]


async def test_waited_messages_to_a_busy_agent_get_their_own_replies(manager):
    await _idle_demo(manager)
    await manager.send_message("s", "bot", "/sleep 1.5", wait=False)
    assert manager.get_worker("s", "bot")["activity"] == "busy"
    first, second = await asyncio.gather(
        manager.send_message("s", "bot", "first question", wait=True, timeout=30),
        manager.send_message("s", "bot", "second question", wait=True, timeout=30),
    )
    assert "reply: first question" in first["reply"], first
    assert "slept" not in first["reply"] and "second" not in first["reply"], first
    assert "reply: second question" in second["reply"], second
    assert "first" not in second["reply"], second
    assert first["timed_out"] is second["timed_out"] is False
    assert _sent(manager) == ["/sleep 1.5", "first question", "second question"]


async def test_a_waited_message_is_not_typed_while_the_agent_stays_busy(manager):
    await _idle_demo(manager)
    await manager.send_message("s", "bot", "/sleep 60", wait=False)
    with pytest.raises(ConflictError, match=r"'bot' was still busy after 0.5 s; the message was"):
        await manager.send_message("s", "bot", "too early", wait=True, timeout=0.5)
    assert "too early" not in manager.get_output("s", "bot")["data"]
    assert _sent(manager) == ["/sleep 60"]
    # Without waiting, it is typed ahead, as someone at the console would.
    result = await manager.send_message("s", "bot", "typed ahead", wait=False)
    assert result["reply"] is None and result["activity"] == "busy"
    await until(lambda: "typed ahead" in manager.get_output("s", "bot")["data"], what="echo")


async def test_a_message_waiting_for_its_turn_is_told_of_a_pause(manager):
    await _idle_demo(manager)
    await manager.send_message("s", "bot", "/sleep 60", wait=False)
    live = manager.supervisor.live[manager.get_worker("s", "bot")["id"]]
    waiting = asyncio.ensure_future(
        manager.send_message("s", "bot", "after the nap", wait=True, timeout=60)
    )
    await until(live._asking.locked, what="the message to wait for its turn")
    await manager.pause_session("s")
    result = await asyncio.wait_for(waiting, 15)
    assert result == {
        "reply": None,
        "activity": "exited",
        "timed_out": False,
        "exit_code": result["exit_code"],
        "exit_reason": "paused",
    }
    assert _sent(manager) == ["/sleep 60"]


async def test_a_send_cancelled_as_its_turn_comes_is_not_typed(manager):
    # The turn comes (the message answered before it is done) in the same instant the
    # waiting send is cancelled (its client left). Python 3.11's wait_for returned the lock
    # and swallowed the cancellation then, so the message was typed for nobody.
    await _idle_demo(manager)
    live = manager.supervisor.live[manager.get_worker("s", "bot")["id"]]
    await live._asking.acquire()  # another waited message is being answered
    task = asyncio.ensure_future(manager.send_message("s", "bot", "raced", wait=True, timeout=30))
    await until(lambda: bool(live._asking._waiters), what="the send waits for its turn")
    live._asking.release()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _sent(manager) == [] and not live._asking.locked()
    # The next waited message gets its turn at once.
    reply = await manager.send_message("s", "bot", "next", wait=True, timeout=30)
    assert "reply: next" in reply["reply"]
