"""Session lifecycle through the manager, on a real filesystem."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
import types

import pytest

from mas_jupyter.core import manager as manager_module
from mas_jupyter.core.errors import ConflictError, InvalidError, LimitError, NotFoundError
from mas_jupyter.core.manager import MASManager


async def test_quick_session_is_made_from_the_default_template(manager, root):
    events = []
    manager.events.subscribe(events.append)
    session = await manager.create_session({"kind": "quick", "task": "TICKET-1"})
    assert session["name"] == "session-001"
    assert session["status"] == "active"
    assert session["task"] == "TICKET-1"
    ws = session["workspace"]
    assert os.path.dirname(ws) == str(root / "mas-sessions")
    assert os.path.isfile(os.path.join(ws, "README.md"))
    with open(os.path.join(ws, ".mas", "session.json")) as fh:
        meta = json.load(fh)
    assert meta["id"] == session["id"]
    assert session["workspace_path"] == "mas-sessions/session-001"
    assert [e["type"] for e in events] == ["session-created"]
    assert events[0]["session"]["id"] == session["id"]


async def test_generated_names_count_up_and_given_names_are_kept(manager):
    a = await manager.create_session({"kind": "quick"})
    b = await manager.create_session({"kind": "quick", "name": "churn"})
    c = await manager.create_session({"kind": "quick"})
    assert [a["name"], b["name"], c["name"]] == ["session-001", "churn", "session-002"]
    assert manager.get_session("churn")["id"] == b["id"]
    assert manager.get_session(b["id"])["name"] == "churn"


async def test_custom_template_is_copied_without_symlinks(make_manager, tmp_path):
    templates = tmp_path / "templates"
    (templates / "analysis").mkdir(parents=True)
    (templates / "analysis" / "notes.md").write_text("hello")
    (templates / "analysis" / "bin").mkdir()
    (templates / "analysis" / "bin" / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(templates / "analysis" / "bin" / "run.sh", 0o750)
    (templates / "analysis" / ".mas").mkdir()  # a template's own state is not copied
    (templates / "analysis" / ".mas" / "stale.json").write_text("{}")
    os.symlink("/etc/passwd", templates / "analysis" / "escape")
    os.mkfifo(templates / "analysis" / "pipe")  # a 500 before: shutil refuses named pipes
    manager = make_manager(templates_dir=str(templates))
    session = await manager.create_session({"kind": "quick", "template": "analysis"})
    ws = session["workspace"]
    with open(os.path.join(ws, "notes.md")) as fh:
        assert fh.read() == "hello"
    assert os.stat(os.path.join(ws, "bin", "run.sh")).st_mode & 0o777 == 0o750
    assert not os.path.lexists(os.path.join(ws, "escape"))
    assert not os.path.lexists(os.path.join(ws, "pipe"))
    assert sorted(os.listdir(os.path.join(ws, ".mas"))) == [".gitignore", "session.json"]
    with pytest.raises(NotFoundError, match="no template named 'nope'"):
        await manager.create_session({"kind": "quick", "template": "nope"})


async def test_a_template_grown_in_place_is_copied_off_the_loop(make_manager, tmp_path):
    """A small template was remembered as small while its folder's time stayed the same: a
    dataset copied over one of its files was then copied on the event loop (the server
    froze for seconds; QA)."""
    data = tmp_path / "templates" / "t" / "sub" / "data.bin"
    data.parent.mkdir(parents=True)
    data.write_bytes(b"x")
    manager = make_manager(templates_dir=str(tmp_path / "templates"))
    small = manager.workspaces.is_small
    assert small(str(data.parent.parent))
    with open(data, "r+b") as fh:  # in place: no folder's time changes
        fh.write(b"x" * 300_000)
    assert not small(str(data.parent.parent))
    data.write_bytes(b"x")
    assert small(str(data.parent.parent))
    (data.parent / "more").mkdir()
    for n in range(40):
        (data.parent / "more" / f"f{n}").write_text("x")
    assert not small(str(data.parent.parent))


async def test_dir_session_uses_an_existing_directory_as_is(manager, root):
    shared = root / "project"
    shared.mkdir()
    (shared / "keep.txt").write_text("mine")
    session = await manager.create_session({"kind": "dir", "path": "project"})
    assert session["workspace"] == str(shared)
    assert (shared / "keep.txt").read_text() == "mine"
    await manager.delete_session(session["id"], purge=True)
    assert (shared / "keep.txt").read_text() == "mine"
    with pytest.raises(NotFoundError):
        manager.get_session(session["id"])


@pytest.mark.parametrize(
    "mine",
    [
        "# Notes\nKeep the raw data read-only.\n\n",
        "# Notes\r\nWindows line ends\r\n",
        "  \n",
        "no line end",
        "",  # an empty file of the user's was removed
        None,
    ],
)
@pytest.mark.parametrize("purge", [True, False])
async def test_deleting_a_dir_session_takes_its_persona_out_of_the_users_file(
    make_manager, root, mine, purge
):
    """The folder is the user's: the persona's section stayed in their file, with a line end
    added to a last line that had none."""
    manager = make_manager(backends={"bot": {"argv": ["cat"], "instructions_file": "BOT.md"}})
    shared = root / "project"
    shared.mkdir()
    if mine is not None:
        (shared / "BOT.md").write_text(mine)
    worker = {"name": "bot1", "backend": "bot", "persona": "pm"}
    await manager.create_session(
        {"kind": "dir", "path": "project", "name": "d", "workers": [worker]}
    )
    assert "Your role: product manager" in (shared / "BOT.md").read_text()
    assert "Current task: (none set)." in (shared / "BOT.md").read_text()  # was "task: ."
    await manager.create_worker("d", {"name": "bot2", "backend": "bot", "persona": "qa"})
    await manager.delete_worker("d", "bot2")  # not the section's worker: the section stays
    assert "Your role: product manager" in (shared / "BOT.md").read_text()
    await manager.delete_session("d", purge=purge)
    assert (shared / "BOT.md").exists() is (mine is not None)
    if mine is not None:  # byte for byte, a last line without a line end included
        assert (shared / "BOT.md").read_bytes().decode() == mine


async def test_rename_and_task_are_logged_and_announced(manager):
    session = await manager.create_session({"kind": "quick", "name": "a"})
    events = []
    manager.events.subscribe(events.append)
    manager.update_session("a", {"name": "b", "task": "JIRA-7"})
    assert manager.get_session(session["id"])["name"] == "b"
    assert manager.get_session("b")["task"] == "JIRA-7"
    manager.update_session("b", {"task": None})
    assert manager.get_session("b")["task"] is None
    log = manager.list_activities("b")
    assert [a["type"] for a in log] == ["created", "renamed", "task-changed", "task-changed"]
    assert log[1]["detail"] == {"old": "a", "new": "b"}
    assert [e["type"] for e in events] == ["session-updated", "session-updated"]
    with pytest.raises(InvalidError, match="unknown field"):
        manager.update_session("b", {"status": "stopped"})


async def test_rename_to_a_taken_name_conflicts(manager):
    await manager.create_session({"kind": "quick", "name": "a"})
    await manager.create_session({"kind": "quick", "name": "b"})
    with pytest.raises(ConflictError, match="already exists"):
        manager.update_session("b", {"name": "a"})
    assert manager.get_session("b")["name"] == "b"


async def test_pause_resume_stop_and_active_time(manager):
    session = await manager.create_session({"kind": "quick", "name": "s"})
    paused = await manager.pause_session("s")
    assert paused["status"] == "paused"
    frozen = paused["active_seconds"]
    await asyncio.sleep(0.05)  # time passing while paused must not count
    assert manager.get_session("s")["active_seconds"] == frozen
    with pytest.raises(ConflictError, match="not active"):
        await manager.pause_session("s")
    resumed = await manager.resume_session("s")
    assert resumed["status"] == "active"
    stopped = await manager.stop_session("s")
    assert stopped["status"] == "stopped"
    assert os.path.isdir(session["workspace"])  # stop keeps the workspace
    with pytest.raises(ConflictError, match="already stopped"):
        await manager.stop_session("s")
    types = [a["type"] for a in manager.list_activities("s")]
    assert types == ["created", "paused", "resumed", "stopped"]


async def test_list_filters(manager):
    await manager.create_session({"kind": "quick", "name": "a", "task": "T1"})
    await manager.create_session({"kind": "quick", "name": "b", "task": "T2"})
    await manager.create_session({"kind": "dir", "name": "c", "path": ".", "task": "T1"})
    await manager.pause_session("b")
    names = lambda rows: [r["name"] for r in rows]  # noqa: E731
    assert names(manager.list_sessions()) == ["a", "b", "c"]
    assert names(manager.list_sessions(task="T1")) == ["a", "c"]
    assert names(manager.list_sessions(status="paused")) == ["b"]
    assert names(manager.list_sessions(kind="dir")) == ["c"]
    with pytest.raises(InvalidError):
        manager.list_sessions(status="sleeping")


async def test_activity_log_limit_and_since(manager):
    await manager.create_session({"kind": "quick", "name": "s"})
    for i in range(5):
        manager.update_session("s", {"task": f"t{i}"})
    log = manager.list_activities("s")
    assert len(log) == 6
    assert [a["seq"] for a in log] == sorted(a["seq"] for a in log)
    assert manager.list_activities("s", limit=2) == log[-2:]
    assert manager.list_activities("s", since=log[3]["seq"]) == log[4:]
    with pytest.raises(InvalidError):
        manager.list_activities("s", limit=0)


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"kind": "nope"}, "kind must be one of"),
        ({"kind": "quick", "name": "../evil"}, "is not allowed"),
        ({"kind": "quick", "name": ".hidden"}, "is not allowed"),
        ({"kind": "quick", "name": "-rf"}, "is not allowed"),
        ({"kind": "quick", "name": "a/b"}, "is not allowed"),
        ({"kind": "quick", "name": "a\nb"}, "is not allowed"),
        ({"kind": "quick", "name": "x" * 65}, "longer than 64"),
        ({"kind": "quick", "name": 5}, "must be a string"),
        ({"kind": "quick", "template": "../default"}, "is not allowed"),
        ({"kind": "quick", "template": "/etc"}, "is not allowed"),
        ({"kind": "quick", "task": "a\x00b"}, "control characters"),
        ({"kind": "quick", "repo": "."}, "does not apply"),
        ({"kind": "quick", "colour": "red"}, "unknown field"),
        ({"kind": "dir"}, "needs 'path'"),
        ({"kind": "dir", "path": "/etc"}, "outside the allowed roots"),
        ({"kind": "dir", "path": "../.."}, "outside the allowed roots"),
        ({"kind": "dir", "path": "a\x00b"}, "NUL"),
        ({"kind": "dir", "path": "missing"}, "not an existing directory"),
        # The engine's own state: an agent there could rewrite the database under the server.
        ({"kind": "dir", "path": "mas-sessions/.mas"}, "in the engine's own state folder"),
        ({"kind": "dir", "path": "mas-sessions/.mas/dir-sessions"}, "engine's own state"),
        ({"kind": "worktree"}, "needs 'repo'"),
        ({"kind": "quick", "workers": "x"}, "must be a list"),
    ],
)
async def test_bad_input_creates_nothing(manager, root, spec, message):
    before = sorted(os.listdir(root / "mas-sessions"))
    with pytest.raises((InvalidError, NotFoundError, Exception), match=message):
        await manager.create_session(spec)
    assert manager.store.count_sessions() == 0
    assert sorted(os.listdir(root / "mas-sessions")) == before


async def test_symlink_out_of_the_root_is_refused(manager, root, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, root / "link")
    with pytest.raises(Exception, match="outside the allowed roots"):
        await manager.create_session({"kind": "dir", "path": "link"})
    # A prefix of the root's name is not the root: /x/root-evil is not inside /x/root.
    evil = tmp_path / "root-evil"
    evil.mkdir()
    with pytest.raises(Exception, match="outside the allowed roots"):
        await manager.create_session({"kind": "dir", "path": str(evil)})


async def test_parallel_creates_with_one_name_have_one_winner(manager):
    results = await asyncio.gather(
        *(manager.create_session({"kind": "quick", "name": "same"}) for _ in range(8)),
        return_exceptions=True,
    )
    wins = [r for r in results if isinstance(r, dict)]
    losses = [r for r in results if isinstance(r, ConflictError)]
    assert len(wins) == 1 and len(losses) == 7
    assert [s["name"] for s in manager.list_sessions()] == ["same"]
    # Every loser cleaned up after itself: one workspace, no staging left.
    sessions_root = manager.workspaces.root
    assert sorted(e for e in os.listdir(sessions_root) if not e.startswith(".")) == ["same"]
    assert os.listdir(manager.workspaces.staging_dir) == []


async def test_parallel_generated_names_are_distinct(manager):
    results = await asyncio.gather(*(manager.create_session({"kind": "quick"}) for _ in range(10)))
    assert sorted(r["name"] for r in results) == [f"session-{i:03d}" for i in range(1, 11)]


async def test_session_limit(make_manager):
    manager = make_manager(max_sessions=2)
    await manager.create_session({"kind": "quick", "name": "a"})
    await manager.create_session({"kind": "quick", "name": "b"})
    with pytest.raises(LimitError, match="limit of 2 sessions"):
        await manager.create_session({"kind": "quick", "name": "c"})
    await manager.stop_session("a")
    await manager.create_session({"kind": "quick", "name": "c"})  # stopped ones do not count
    # ... and a stopped one resumed would count again: refused while the limit is reached.
    with pytest.raises(LimitError, match="limit of 2 sessions"):
        await manager.resume_session("a")
    assert manager.get_session("a")["status"] == "stopped"
    await manager.pause_session("c")
    await manager.resume_session("c")  # a paused one counts already
    await manager.delete_session("c")
    assert (await manager.resume_session("a"))["status"] == "active"


async def test_a_worker_of_a_paused_session_says_to_resume_it(manager):
    await manager.create_session({"kind": "quick", "name": "s"})
    await manager.create_worker("s", {"name": "sh", "kind": "terminal"})
    await manager.pause_session("s")
    with pytest.raises(ConflictError, match="session 's' is paused; resume it first"):
        manager.write_input("s", "sh", "ls\r")


async def test_delete_keeps_or_purges_a_quick_workspace(manager):
    kept = await manager.create_session({"kind": "quick", "name": "kept"})
    gone = await manager.create_session({"kind": "quick", "name": "gone"})
    events = []
    manager.events.subscribe(events.append)
    await manager.delete_session("kept")
    await manager.delete_session("gone", purge=True)
    assert os.path.isdir(kept["workspace"])
    assert not os.path.exists(os.path.join(kept["workspace"], ".mas", "session.json"))
    assert not os.path.exists(gone["workspace"])
    assert [e["type"] for e in events] == ["session-deleted", "session-deleted"]
    assert manager.list_sessions() == []
    # The name is free again, and the new workspace does not collide with the kept folder.
    again = await manager.create_session({"kind": "quick", "name": "kept"})
    assert again["workspace"] != kept["workspace"]


async def test_state_survives_a_new_manager(make_manager, root):
    first = make_manager()
    session = await first.create_session({"kind": "quick", "name": "s", "task": "T"})
    await first.pause_session("s")
    await first.shutdown()
    second = make_manager()
    await second.recover()
    again = second.get_session("s")
    assert again["id"] == session["id"]
    assert again["status"] == "paused" and again["task"] == "T"


async def test_reindex_rebuilds_sessions_from_workspace_metadata(make_manager, root):
    first = make_manager()
    quick = await first.create_session({"kind": "quick", "name": "q", "task": "T"})
    shared = root / "shared"
    shared.mkdir()
    folder = await first.create_session({"kind": "dir", "name": "d", "path": "shared"})
    await first.shutdown()
    os.unlink(root / "mas-sessions" / ".mas" / "state.sqlite")
    second = make_manager()
    assert second.list_sessions() == []
    report = await second.reindex()
    assert sorted(report["added"]) == ["d", "q"]
    q = second.get_session("q")
    assert q["id"] == quick["id"] and q["task"] == "T" and q["status"] == "paused"
    assert second.get_session("d")["workspace"] == folder["workspace"]
    assert (await second.reindex())["added"] == []  # idempotent


def test_manager_is_configurable_by_traitlets(tmp_path):
    from traitlets.config import Config

    config = Config()
    config.MASManager.root_dir = str(tmp_path)
    config.MASManager.sessions_root = "work"
    config.MASManager.max_sessions = 3
    manager = MASManager(config=config)
    assert manager.resolved_sessions_root == os.path.realpath(tmp_path / "work")
    assert manager.max_sessions == 3
    for name, trait in MASManager.class_traits(config=True).items():
        assert trait.help, f"MASManager.{name} has no help text"


def test_an_unusable_sessions_root_is_a_clear_error(tmp_path):
    from mas_jupyter.core.store import StoreError

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    manager = MASManager(root_dir=str(tmp_path), sessions_root=str(blocker / "sessions"))
    with pytest.raises(StoreError, match="cannot use the sessions root .*sessions_root"):
        manager.start()
    assert blocker.read_text() == "not a folder"


async def test_listing_json_follows_every_change(manager):
    await manager.create_session({"kind": "quick", "name": "a", "task": "T"})
    first, tag = manager.list_sessions_json()
    assert json.loads(first) == manager.list_sessions()
    again, same_tag = manager.list_sessions_json()
    assert again is first and same_tag == tag  # encoded once while nothing changes
    manager.update_session("a", {"task": "U"})
    changed, new_tag = manager.list_sessions_json()
    assert json.loads(changed)[0]["task"] == "U" and new_tag != tag
    assert json.loads(manager.list_sessions_json(task="T")[0]) == []


async def test_listing_active_time_moves_on_without_asking_the_store(manager, monkeypatch):
    await manager.create_session({"kind": "quick", "name": "on"})
    await manager.create_session({"kind": "quick", "name": "off"})
    await manager.pause_session("off")
    before = {s["name"]: s for s in manager.list_sessions()}
    queries = []
    real_list = manager.store.list_sessions
    monkeypatch.setattr(
        manager.store, "list_sessions", lambda *a, **k: queries.append(1) or real_list(*a, **k)
    )
    # A minute later on the wall clock, two seconds later for the listing's refresh.
    later = time.time() + 60
    monkeypatch.setattr(manager_module, "now", lambda: later)
    monotonic = time.monotonic
    monkeypatch.setattr(
        manager_module, "time", types.SimpleNamespace(monotonic=lambda: monotonic() + 2)
    )

    after = {s["name"]: s for s in manager.list_sessions()}
    assert queries == []  # refreshed, not rebuilt
    assert after["on"]["active_seconds"] >= before["on"]["active_seconds"] + 59
    assert after["off"] == before["off"]  # paused time does not count
    assert before["on"]["active_seconds"] < 59  # the rows handed out earlier did not change
    assert json.loads(manager.list_sessions_json()[0]) == list(after.values())

    manager.update_session("off", {"task": "T"})  # a store change: rebuilt from the store
    assert [s["task"] for s in manager.list_sessions()] == [None, "T"]
    assert queries == [1]


async def test_listing_follows_a_new_persona_file(make_manager, tmp_path):
    folder = tmp_path / "personas"
    folder.mkdir()
    manager = make_manager(personas_dir=str(folder))
    await manager.create_session(
        {
            "name": "s",
            "workers": [{"name": "pm", "backend": "demo", "persona": "pm"}],
        }
    )
    assert manager.list_sessions()[0]["workers"][0]["persona_icon"] != "🦉"
    (folder / "pm.md").write_text("icon: 🦉\nYou plan the work.\n")
    assert manager.list_sessions()[0]["workers"][0]["persona_icon"] == "🦉"


# What json.loads makes of "\ud800": a str with no UTF-8 encoding.
LONE = "\ud800"


@pytest.mark.parametrize(
    "spec",
    [
        {"task": LONE},
        {"task": "x" + LONE},
        {"kind": "dir", "path": LONE},
        {"kind": "worktree", "repo": LONE},
        {"kind": "worktree", "repo": "repo", "branch": "b" + LONE},
    ],
)
async def test_text_that_is_not_unicode_creates_nothing(manager, make_repo, spec):
    make_repo()
    with pytest.raises(InvalidError, match="not valid Unicode"):
        await manager.create_session(spec)
    assert manager.store.count_sessions() == 0
    await manager.create_session({"name": "s"})
    with pytest.raises(InvalidError, match="not valid Unicode"):
        manager.update_session("s", {"task": LONE})


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"workers": {}}, "workers must be a list"),
        ({"workers": 0}, "workers must be a list"),
        ({"workers": False}, "workers must be a list"),
        ({"template": False}, "template must be a string"),
        ({"template": ""}, "template must not be empty"),
        ({"kind": "worktree", "repo": "repo", "base": ""}, "base must be a non-empty string"),
        ({"kind": "worktree", "repo": "repo", "base": False}, "base must be a non-empty string"),
        ({"kind": "worktree", "repo": "repo", "branch": False}, "branch must be a non-empty"),
        ({"kind": "worktree", "repo": "repo", "branch": "refs/heads/x"}, "full ref"),
        ({"kind": "worktree", "repo": "repo", "branch": "heads/x"}, "full ref"),
        # null is "not given" only where the API says a field may be null (task).
        ({"name": None}, "'name' must not be null"),
        ({"template": None}, "'template' must not be null"),
        ({"workers": None}, "'workers' must not be null"),
        ({"kind": "worktree", "repo": "repo", "base": None}, "'base' must not be null"),
        ({"kind": "quick", "repo": None}, "'repo' must not be null"),
    ],
)
async def test_wrong_types_are_refused_not_defaulted(manager, make_repo, spec, message):
    make_repo()
    with pytest.raises(InvalidError, match=message):
        await manager.create_session(spec)
    assert manager.store.count_sessions() == 0


async def test_null_task_is_no_task(manager):
    session = await manager.create_session({"name": "s", "task": None})
    assert session["task"] is None


async def test_a_name_shaped_like_an_id_is_refused(manager):
    other = await manager.create_session({"name": "other"})
    with pytest.raises(InvalidError, match="looks like an id"):
        await manager.create_session({"name": other["id"]})
    await manager.create_session({"name": "s"})
    with pytest.raises(InvalidError, match="looks like an id"):
        manager.update_session("s", {"name": other["id"].upper()})
    assert manager.get_session(other["id"])["name"] == "other"
    assert [s["name"] for s in manager.list_sessions()] == ["other", "s"]


async def test_more_initial_workers_than_a_session_may_have_is_the_limit_error(make_manager):
    # The same error (429 over HTTP) as adding one worker too many to a session.
    manager = make_manager(max_workers_per_session=1)
    workers = [{"kind": "terminal", "name": f"t{i}"} for i in range(2)]
    with pytest.raises(LimitError, match="at most 1 worker.*max_workers_per_session"):
        await manager.create_session({"name": "s", "workers": workers})
    assert manager.store.count_sessions() == 0


@pytest.mark.parametrize("force", [None, "yes", 1])
async def test_stop_force_must_be_a_boolean(manager, force):
    await manager.create_session({"name": "s"})
    with pytest.raises(InvalidError, match="force must be true or false"):
        await manager.stop_session("s", force=force)
    assert manager.get_session("s")["status"] == "active"


@pytest.mark.parametrize("how", ["pause", "stop"])
async def test_a_workspace_deleted_under_a_session_is_not_made_again(manager, how):
    """Pausing wrote the session's metadata into a new, empty folder where the workspace had
    been, so a resume "worked" and started the workers in it."""
    session = await manager.create_session({"kind": "quick", "name": "gone"})
    await manager.create_worker("gone", {"name": "sh", "kind": "terminal"})
    shutil.rmtree(session["workspace"])
    await (manager.pause_session("gone") if how == "pause" else manager.stop_session("gone"))
    assert not os.path.exists(session["workspace"])
    with pytest.raises(ConflictError, match="is gone; it cannot be resumed"):
        await manager.resume_session("gone")
