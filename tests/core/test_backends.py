"""Tests of the backend registry, personas, instructions files and templates."""

from __future__ import annotations

import logging
import os
import sys

import pytest

from mas_jupyter.core import backends as backends_module
from mas_jupyter.core.backends import (
    DEMO_PATTERNS,
    Backend,
    list_templates,
    load_backends,
    validate_backend,
)
from mas_jupyter.core.errors import ForbiddenError, InvalidError, UnavailableError
from mas_jupyter.core.personas import (
    PERSONA_END,
    Persona,
    first_message,
    load_personas,
    remove_instructions,
    section_owner,
    start_marker,
    without_section,
    write_instructions,
)


def builtins():
    return load_backends({}, entry_points=False)


def test_builtins_and_their_commands():
    b = builtins()
    assert set(b) >= {"claude", "codex", "aider", "gemini", "shell", "demo"}
    assert b["claude"].command() == ["claude"]
    assert b["claude"].command(resume=True) == ["claude", "--continue"]
    assert b["codex"].command(resume=True) == ["codex", "resume", "--last"]
    assert b["aider"].command(resume=True) == ["aider", "--restore-chat-history"]
    assert b["gemini"].command(resume=True) == ["gemini", "--resume"]
    assert b["demo"].argv == [sys.executable, "-m", "mas_jupyter.demo_agent"]
    assert b["demo"].command(resume=True)[-1] == "--continue"
    assert b["shell"].kind == "terminal" and b["shell"].argv[-1] == "-i"
    assert os.path.isabs(b["shell"].argv[0])
    assert b["claude"].instructions_file == "CLAUDE.md"
    assert b["codex"].instructions_file == "AGENTS.md"
    assert b["gemini"].instructions_file == "GEMINI.md"


def test_aider_reads_its_conventions_only_when_written():
    aider = builtins()["aider"]
    assert aider.command() == ["aider"]
    assert aider.command(instructions=True) == ["aider", "--read", "CONVENTIONS.md"]
    assert aider.command(resume=True, instructions=True)[-2:] == ["--read", "CONVENTIONS.md"]


def test_conversation_ids_from_exit_messages_resume_that_conversation():
    b = builtins()
    claude_exit = "Resume this session with:\nclaude --resume 1905a471-c622-4e83-98f7-123b88cf7f64"
    cid = b["claude"].conversation_id(claude_exit)
    assert cid == "1905a471-c622-4e83-98f7-123b88cf7f64"
    assert b["claude"].command(resume=True, conversation_id=cid) == ["claude", "--resume", cid]
    codex_exit = "To reconnect, run:\n  codex resume 01a20b88-6aec-7c52-9049-c9c3c18825f1\n"
    cid = b["codex"].conversation_id(codex_exit)
    assert b["codex"].command(resume=True, conversation_id=cid) == ["codex", "resume", cid]
    assert b["aider"].conversation_id(claude_exit) is None
    # Colours between the words do not hide the id.
    coloured = "\x1b[2mclaude --resume\x1b[0m 1905a471-c622-4e83-98f7-123b88cf7f64\r\n"
    assert b["claude"].conversation_id(coloured) == "1905a471-c622-4e83-98f7-123b88cf7f64"
    # An id that would read as an option is never put into argv.
    assert b["codex"].command(resume=True, conversation_id="--dangerous") == [
        "codex",
        "resume",
        "--last",
    ]
    # Without an id, resume falls back to the last conversation.
    assert b["codex"].command(resume=True, conversation_id=None) == ["codex", "resume", "--last"]


def test_shell_uses_the_users_shell(monkeypatch):
    monkeypatch.setenv("SHELL", "/bin/sh")
    assert builtins()["shell"].argv == ["/bin/sh", "-i"]
    monkeypatch.setenv("SHELL", "not-absolute")
    assert builtins()["shell"].argv == ["/bin/bash", "-i"]


def test_availability_and_to_dict():
    b = builtins()
    assert b["demo"].availability() == (True, None)
    missing = Backend(name="x", argv=["no-such-program-mas"], install_hint="pip install x")
    ok, reason = missing.availability()
    assert not ok
    assert reason == (
        "program 'no-such-program-mas' not found on PATH; install it with: pip install x"
    )
    ok, reason = Backend(name="y", argv=["/nonexistent/bin/y"]).availability()
    assert not ok and "does not exist" in reason and "c.MASManager.backends['y']" in reason
    ok, reason = b["claude"].availability(path="/nonexistent")
    assert not ok and "npm install -g @anthropic-ai/claude-code" in reason
    d = Backend(name="z", argv=["no-such-z"], env={"API_KEY": "secret"}).to_dict()
    assert d["available"] is False and d["reason"]
    assert d["env_keys"] == ["API_KEY"]
    assert "secret" not in repr(d)


def test_configured_fields_update_a_builtin():
    b = load_backends(
        {"claude": {"patterns": {"idle": [r"my prompt>\s*\Z"]}, "env": {"FOO": "1"}}},
        entry_points=False,
    )
    claude = b["claude"]
    assert claude.patterns["idle"] == [r"my prompt>\s*\Z"]
    assert claude.patterns["busy"] == builtins()["claude"].patterns["busy"]  # kept
    assert claude.env == {"FOO": "1"}
    assert claude.argv == ["claude"]


def test_configured_new_backend_like_the_design_example():
    b = load_backends(
        {
            "mybot": {
                "argv": ["mybot"],
                "resume_argv": ["mybot", "--continue"],
                "env": {"MYBOT_MODE": "fast"},
                "patterns": {
                    "idle": [r"mybot ready >\s*$"],
                    "busy": [r"is working"],
                    "waiting": [r"\(yes/no\)\s*$"],
                },
            }
        },
        entry_points=False,
    )
    bot = b["mybot"]
    assert bot.kind == "agent" and bot.submit == "\r" and bot.paste == "bracketed"
    assert bot.rules().classify(["mybot ready >"], stable_for=1.0) == "idle"
    assert bot.rules().classify(["Delete it? (yes/no)"], stable_for=1.0) == "waiting"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"new": {"patterns": {}}}, "argv is required"),
        ({"new": {"argv": []}}, "argv must be a non-empty list"),
        ({"new": {"argv": "bot"}}, "argv must be a non-empty list"),
        ({"new": {"argv": ["bot", 3]}}, "argv must be a non-empty list"),
        ({"new": {"argv": ["bot"], "env": {"LD_PRELOAD": "x.so"}}}, "env"),
        ({"new": {"argv": ["bot"], "env": {"NODE_OPTIONS": "--x"}}}, "refused"),
        ({"new": {"argv": ["bot"], "patterns": {"idle": ["(unclosed"]}}}, "patterns.idle"),
        ({"new": {"argv": ["bot"], "paste": "fancy"}}, "paste must be one of"),
        ({"new": {"argv": ["bot"], "kind": "robot"}}, "kind must be one of"),
        ({"new": {"argv": ["bot"], "submit": ""}}, "submit"),
        ({"new": {"argv": ["bot"], "idle_stable_seconds": -1}}, "idle_stable_seconds"),
        ({"new": {"argv": ["bot"], "instructions_file": "../x.md"}}, "instructions_file"),
        ({"new": {"argv": ["bot"], "instructions_args": 5}}, "instructions_args must be"),
        ({"new": {"argv": ["bot"], "instructions_args": "--read"}}, "instructions_args must be"),
        ({"new": {"argv": ["bot"], "colour": "red"}}, "unknown field"),
        ({"bad name!": {"argv": ["bot"]}}, "backend name"),
        ({"claude": {"argv": None}}, "argv must be a non-empty list"),
        ({"claude": "claude"}, "must be a dict"),
        ({"new": {"argv": ["b"], "conversation_id_pattern": "(a)(b)"}}, "exactly one group"),
    ],
)
def test_invalid_configuration_names_option_and_field(config, message):
    # The entry is not used; it is listed unavailable with why, and the others are kept.
    b = load_backends(config, entry_points=False)
    name = next(iter(config))
    ok, reason = b[name].availability()
    assert not ok
    assert reason.startswith(f"invalid configuration (c.MASManager.backends[{name!r}]): ")
    assert message in reason
    assert b[name].to_dict()["reason"] == reason
    assert {"demo", "shell", "codex"} <= set(b) and b["demo"].availability() == (True, None)
    assert b["demo"].argv == builtins()["demo"].argv


def test_an_invalid_entry_over_a_builtin_does_not_fall_back_to_the_builtin():
    b = load_backends(
        {"claude": {"patterns": {"busy": ["["]}}, "aider": {"env": {"GOOD": "1"}}},
        entry_points=False,
    )
    ok, reason = b["claude"].availability(path=os.path.dirname(sys.executable))
    assert not ok and reason.startswith("invalid configuration (c.MASManager.backends['claude'])")
    assert "patterns.busy" in reason
    listed = b["claude"].to_dict()
    assert listed["available"] is False and listed["kind"] == "agent"
    assert listed["argv"] == [] and listed["patterns"] == {}  # nothing of the built-in is run
    assert b["claude"].command() == [] and b["claude"].command(resume=True) == []
    assert b["aider"].env == {"GOOD": "1"}  # a valid entry next to it still applies


def test_an_invalid_entry_keeps_its_kind_when_that_is_valid():
    b = load_backends({"mysh": {"argv": "bash", "kind": "terminal"}}, entry_points=False)
    assert b["mysh"].kind == "terminal" and b["mysh"].invalid
    b = load_backends({"odd": {"argv": "x", "kind": "robot"}}, entry_points=False)
    assert b["odd"].kind == "agent"


def test_validate_backend_itself_still_raises():
    with pytest.raises(InvalidError, match="patterns.idle"):
        validate_backend({"argv": ["bot"], "patterns": {"idle": ["("]}}, "new")


class FakeEntryPoint:
    def __init__(self, name, value) -> None:
        self.name = name
        self.value = f"pkg:{name}"
        self._value = value

    def load(self):
        if isinstance(self._value, Exception):
            raise self._value
        return self._value


def test_entry_point_backends(monkeypatch):
    eps = [
        FakeEntryPoint("fromdict", {"argv": ["fromdict"], "description": "a dict"}),
        FakeEntryPoint("frominstance", Backend(name="frominstance", argv=["inst"])),
        FakeEntryPoint("fromfactory", lambda: {"name": "fromfactory", "argv": ["fac"]}),
    ]
    monkeypatch.setattr(backends_module.metadata, "entry_points", lambda group: eps)
    b = load_backends({"fromdict": {"env": {"A": "b"}}})
    assert b["fromdict"].argv == ["fromdict"] and b["fromdict"].env == {"A": "b"}
    assert b["frominstance"].argv == ["inst"]
    assert b["fromfactory"].argv == ["fac"]


def test_broken_entry_points_are_unavailable_with_why(monkeypatch):
    eps = [
        FakeEntryPoint("boom", ImportError("no module named boom")),
        FakeEntryPoint("num", 42),
        FakeEntryPoint("bad", {"argv": ["x"], "env": {"PATH": "/evil"}}),
        FakeEntryPoint("good", {"argv": ["good"]}),
    ]
    monkeypatch.setattr(backends_module.metadata, "entry_points", lambda group: eps)
    b = load_backends({"bad": {"argv": ["fixed"]}})
    for name, message in [
        ("boom", "backend entry point 'boom' (pkg:boom) failed to load: no module named boom"),
        ("num", "backend entry point 'num' (pkg:num) must give a Backend or a dict, not int"),
        ("bad", "invalid backend entry point 'bad' (pkg:bad): env: "),
    ]:
        ok, reason = b[name].availability()
        assert not ok and reason.startswith(message), reason
    # Configuration cannot patch over a broken entry point: it stays unavailable.
    assert b["bad"].argv == []
    assert b["good"].argv == ["good"] and b["demo"].availability() == (True, None)
    # Entry points are not consulted when turned off.
    assert "boom" not in load_backends({}, entry_points=False)


BAD_CONFIG = {
    "catbot": {"argv": ["cat"], "patterns": {"idle": ["(unclosed"]}},
    "strbot": {"argv": "python3"},
}
DEMO_FAST = {"MAS_DEMO_DELAY": "0.3"}


def _config_warnings(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "c.MASManager.backends" in r.getMessage()
    ]


async def test_an_invalid_configured_backend_is_isolated(make_manager, caplog):
    caplog.set_level(logging.WARNING)
    manager = make_manager(backends=BAD_CONFIG)
    listed = {b["name"]: b for b in manager.list_backends()}
    assert listed["demo"]["available"] is True and listed["demo"]["reason"] is None
    assert listed["catbot"]["available"] is False
    assert listed["catbot"]["reason"].startswith(
        "invalid configuration (c.MASManager.backends['catbot']): "
        "patterns.idle has an invalid regex '(unclosed': "
    )
    assert listed["strbot"] == {
        **listed["strbot"],
        "available": False,
        "reason": "invalid configuration (c.MASManager.backends['strbot']): "
        "argv must be a non-empty list of strings",
    }
    s = await manager.create_session(
        {"name": "x", "workers": [{"backend": "demo", "env": DEMO_FAST}]}
    )
    assert [w["backend"] for w in s["workers"]] == ["demo"]
    with pytest.raises(UnavailableError) as err:
        await manager.create_session({"name": "y", "workers": [{"backend": "catbot"}]})
    assert err.value.status == 409 and err.value.reason == "unavailable"
    assert err.value.message.startswith(
        "backend 'catbot' is unavailable: invalid configuration "
        "(c.MASManager.backends['catbot']): patterns.idle has an invalid regex"
    )
    with pytest.raises(UnavailableError, match="c.MASManager.backends\\['strbot'\\]"):
        await manager.create_worker("x", {"name": "w", "backend": "strbot"})
    assert [s["name"] for s in manager.list_sessions()] == ["x"]
    assert [w["name"] for w in manager.list_workers("x")] == ["demo"]
    manager.list_backends()
    # Checked when the engine started: one warning line per invalid entry, however often used.
    warnings = _config_warnings(caplog)
    assert len(warnings) == 2
    assert (
        warnings[0]
        == "mas_jupyter: backend 'catbot' is unavailable: " + (listed["catbot"]["reason"])
    )
    assert (
        warnings[1]
        == "mas_jupyter: backend 'strbot' is unavailable: " + (listed["strbot"]["reason"])
    )


async def test_the_invalid_configuration_is_logged_at_start(make_manager, caplog):
    caplog.set_level(logging.WARNING)
    make_manager(backends=BAD_CONFIG)
    assert len(_config_warnings(caplog)) == 2  # before anything asked for the backends


async def test_a_configuration_made_invalid_later_refuses_to_start_its_workers(
    make_manager, caplog
):
    demo = builtins()["demo"]
    manager = make_manager(backends={"bot": {"argv": demo.argv, "patterns": DEMO_PATTERNS}})
    await manager.create_session({"name": "s"})
    w = await manager.create_worker("s", {"name": "b", "backend": "bot", "env": DEMO_FAST})
    caplog.set_level(logging.WARNING)
    manager.backends = {**manager.backends, "bot": {"argv": demo.argv, "submit": ""}}
    assert _config_warnings(caplog) == []  # the registry is built again when next used
    (bot,) = [b for b in manager.list_backends() if b["name"] == "bot"]
    assert bot["available"] is False and "submit must be" in bot["reason"]
    assert len(_config_warnings(caplog)) == 1
    with pytest.raises(UnavailableError, match="invalid configuration"):
        await manager.restart_worker("s", "b")
    # Refused before it was stopped: the running worker is left as it was.
    assert manager.get_worker("s", "b")["status"] == "running"
    assert manager.get_worker("s", "b")["pid"] == w["pid"]
    manager.list_backends()
    assert len(_config_warnings(caplog)) == 1


def test_builtin_personas():
    personas = load_personas(None)
    assert set(personas) >= {"pm", "qa", "specialist"}
    for p in personas.values():
        assert p.icon and p.title
        assert "{session}" in p.instructions and "{task}" in p.instructions


def test_persona_render_fills_known_placeholders_only():
    p = Persona("x", "🤖", "X", "In {session} on {task}; code: `{a: 1}` and {unknown} {0}")
    text = p.render({"session": "s1", "task": "T-42", "workspace": "/w"})
    assert text == "In s1 on T-42; code: `{a: 1}` and {unknown} {0}"
    assert first_message(p, {"session": "s1"}).startswith("In s1 on {task}")


def test_persona_files(tmp_path):
    (tmp_path / "analyst.md").write_text(
        "icon: 📊\ntitle: Data analyst\n\nYou analyse data in {workspace}.\n"
    )
    (tmp_path / "reviewer.md").write_text("---\nicon: 👀\ntitle: Reviewer\n---\nReview {task}.\n")
    (tmp_path / "plain.md").write_text("Just a body.\n")
    (tmp_path / "pm.md").write_text("title: Our PM\nCustom PM.\n")
    (tmp_path / "bad name.md").write_text("skipped")
    (tmp_path / "notes.txt").write_text("skipped")
    (tmp_path / "link.md").symlink_to(tmp_path / "plain.md")
    (tmp_path / "huge.md").write_text("x" * (65 * 1024))
    personas = load_personas(str(tmp_path))
    assert personas["analyst"].icon == "📊"
    assert personas["analyst"].title == "Data analyst"
    assert personas["analyst"].instructions == "You analyse data in {workspace}.\n"
    assert (
        personas["reviewer"].icon == "👀"
        and personas["reviewer"].instructions == "Review {task}.\n"
    )
    assert personas["plain"].title == "plain" and personas["plain"].instructions == "Just a body.\n"
    assert personas["pm"].title == "Our PM"  # a file overrides a built-in
    assert "qa" in personas
    for skipped in ("bad name", "notes", "link", "huge"):
        assert skipped not in personas
    assert load_personas(str(tmp_path / "missing")).keys() == load_personas(None).keys()


CONTEXT = {"session": "s1", "task": "T-1", "workspace": "/w", "worker": "w1"}


def test_write_instructions_creates_the_file(tmp_path):
    claude = builtins()["claude"]
    qa = load_personas(None)["qa"]
    path = write_instructions(str(tmp_path), claude, qa, CONTEXT)
    assert path == str(tmp_path / "CLAUDE.md")
    text = (tmp_path / "CLAUDE.md").read_text()
    assert text.startswith(start_marker("w1")) and text.rstrip().endswith(PERSONA_END)
    assert section_owner(str(tmp_path), "CLAUDE.md") == "w1"
    assert section_owner(str(tmp_path), "AGENTS.md") is None
    assert 'session "s1"' in text and "{session}" not in text


def test_lines_added_after_a_section_stay_lines_of_their_own(tmp_path):
    """The user's last line had no line end; the write put one before the section, and an
    agent appended a line after it: taking the section out joined the two lines (QA)."""
    codex = builtins()["codex"]
    personas = load_personas(None)
    (tmp_path / "AGENTS.md").write_text("Rule two")
    write_instructions(str(tmp_path), codex, personas["qa"], CONTEXT)
    with open(tmp_path / "AGENTS.md", "a") as fh:
        fh.write("Agent-added rule three\n")
    remove_instructions(str(tmp_path), "AGENTS.md")
    assert (tmp_path / "AGENTS.md").read_text() == "Rule two\nAgent-added rule three\n"
    (tmp_path / "AGENTS.md").write_text("Rule two")  # nothing after it: byte for byte
    write_instructions(str(tmp_path), codex, personas["qa"], CONTEXT)
    remove_instructions(str(tmp_path), "AGENTS.md")
    assert (tmp_path / "AGENTS.md").read_text() == "Rule two"


def test_write_instructions_keeps_user_content_and_is_idempotent(tmp_path):
    codex = builtins()["codex"]
    personas = load_personas(None)
    (tmp_path / "AGENTS.md").write_text("# My rules\n\nUse tabs.\n")
    write_instructions(str(tmp_path), codex, personas["qa"], CONTEXT)
    once = (tmp_path / "AGENTS.md").read_text()
    assert once.startswith("# My rules\n\nUse tabs.\n\n" + start_marker("w1"))
    write_instructions(str(tmp_path), codex, personas["qa"], CONTEXT)
    assert (tmp_path / "AGENTS.md").read_text() == once
    # Another persona replaces the section in place; the user's text stays.
    (tmp_path / "AGENTS.md").write_text(once + "\nMore of my own notes.\n")
    write_instructions(str(tmp_path), codex, personas["pm"], CONTEXT)
    text = (tmp_path / "AGENTS.md").read_text()
    assert text.count("<!-- mas_jupyter persona") == 2  # its start and its end
    assert "product manager" in text and "quality assurance" not in text
    assert text.startswith("# My rules\n\nUse tabs.\n")
    assert text.endswith("More of my own notes.\n")
    # Taking the section out gives the user's text back, the notes after it included.
    assert without_section(text) == "# My rules\n\nUse tabs.\n\nMore of my own notes.\n"
    assert without_section("# My rules\n") is None
    remove_instructions(str(tmp_path), "AGENTS.md")
    assert (
        tmp_path / "AGENTS.md"
    ).read_text() == "# My rules\n\nUse tabs.\n\nMore of my own notes.\n"
    remove_instructions(str(tmp_path), "missing.md")  # nothing to take out: nothing happens


def test_write_instructions_for_message_backends_returns_none(tmp_path):
    demo = builtins()["demo"]
    assert write_instructions(str(tmp_path), demo, load_personas(None)["pm"], CONTEXT) is None
    assert os.listdir(tmp_path) == []


def test_write_instructions_refuses_a_link_out_of_the_workspace(tmp_path):
    outside = tmp_path / "outside.md"
    outside.write_text("theirs")
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "CLAUDE.md").symlink_to(outside)
    with pytest.raises(ForbiddenError):
        write_instructions(str(ws), builtins()["claude"], load_personas(None)["pm"], CONTEXT)
    assert outside.read_text() == "theirs"


def test_list_templates(tmp_path):
    builtin = list_templates(None)
    assert "default" in builtin
    assert os.path.isfile(os.path.join(builtin["default"], "README.md"))
    extra = tmp_path / "templates"
    (extra / "analysis").mkdir(parents=True)
    (extra / "bad name").mkdir()
    (extra / "file.txt").parent.mkdir(exist_ok=True)
    (extra / "file.txt").write_text("not a dir")
    (extra / "linked").symlink_to(extra / "analysis")
    found = list_templates(str(extra))
    assert found["analysis"] == str(extra / "analysis")
    assert "default" in found
    assert "bad name" not in found and "linked" not in found and "file.txt" not in found
    assert list_templates(str(tmp_path / "missing")) == builtin
