"""%mas and %%mas through a real IPython shell against the test server: good and bad input."""

from __future__ import annotations

import pathlib
import re
import sys

import pexpect
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from kernel_support import DEMO_DELAY, Proxy, demo_idle, execute, finish, git_repo, text_of
from traitlets.config import Config

import mas_jupyter
from mas_jupyter.kernel import Conflict, magics
from mas_jupyter.kernel.magics import MASMagics, _parsers
from mas_jupyter.kernel.transport import HTTPTransport

DOCS = pathlib.Path(__file__).parent.parent.parent / "docs"

SUBCOMMANDS = sorted(_parsers())


@pytest.fixture(scope="module")
def ip():
    """One IPython shell (no history file) with the extension loaded."""
    shell = InteractiveShell.instance(config=Config({"HistoryManager": {"enabled": False}}))
    shell.run_cell("%load_ext mas_jupyter", store_history=False)
    yield shell
    InteractiveShell.clear_instance()


@pytest.fixture
def mas(ip, server_env, monkeypatch, capsys):
    """Run a magic line or cell: returns (stdout, stderr, the error or None)."""
    monkeypatch.setenv("MAS_SERVER_URL", server_env.url)
    monkeypatch.setenv("MAS_TOKEN", server_env.token)

    def run(source: str):
        result = ip.run_cell(source, store_history=False)
        out, err = capsys.readouterr()
        return out, err, result.error_in_exec or result.error_before_exec

    return run


def test_overview_and_every_subcommand_help(mas):
    for line in ("%mas", "%mas --help", "%mas help"):
        out, _, error = mas(line)
        assert error is None
        assert all(sub in out for sub in SUBCOMMANDS) and "%%mas send [WORKER]" in out
    for sub in SUBCOMMANDS:
        out, _, error = mas(f"%mas {sub} --help")
        assert error is None and f"usage: %mas {sub}" in out, sub


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("%mas frobnicate", "unknown subcommand 'frobnicate'"),
        ("%mas list --status sideways", "invalid choice: 'sideways'"),
        ("%mas new --kind nowhere", "invalid choice: 'nowhere'"),
        ("%mas new x --persona pm", "--persona and --env need --agent"),
        ("%mas new a --name b", "give the name once"),
        ("%mas new x --agent demo --env NOEQUALS", "'NOEQUALS' is not KEY=VALUE"),
        ("%mas new x --env A=1", "--persona and --env need --agent"),
        ("%mas add", "one of the arguments --agent --terminal is required"),
        ("%mas add --terminal --persona qa -s x", "a terminal has no persona"),
        ("%mas send", "nothing to send"),
        ("%mas log --limit many", "invalid int value: 'many'"),
        *(
            (
                f"%mas send hi --timeout={value}",
                f"must be a number of seconds more than 0, not {value!r}",
            )
            for value in ("nan", "inf", "-5", "0", "soon")
        ),
        ("%mas delete", "the following arguments are required: session"),
        ("%mas list 'unclosed", "cannot read the arguments"),
        ("%mas workers", "no session given and none is active"),
        ("%mas use nosuch", "no session with id or name 'nosuch'"),
        ("%%mas list\nbody", "only %%mas send takes a cell body"),
    ],
)
def test_bad_input_is_one_clear_line(mas, line, message):
    out, err, error = mas(line)
    assert isinstance(error, UsageError), (out, err)
    assert message in str(error)
    assert "Traceback" not in out + err
    assert err.strip().startswith("UsageError:")


def test_a_server_without_the_extension_is_one_clear_line(
    ip, server_without_mas, monkeypatch, capsys
):
    plain = server_without_mas
    monkeypatch.setenv("MAS_SERVER_URL", plain.url)
    monkeypatch.setenv("MAS_TOKEN", plain.token)
    result = ip.run_cell("%mas list", store_history=False)
    out, err = capsys.readouterr()
    assert isinstance(result.error_in_exec, UsageError)
    # The message itself is pinned in test_client.py; here, that %mas shows it as one line.
    message = HTTPTransport(plain.url, plain.token).not_serving().message
    assert str(result.error_in_exec) == f"%mas list: {message}"
    assert "Traceback" not in out + err and "<" not in err


class _Refusing:
    """A client whose stop is refused with details, as the server refuses a busy session."""

    def stop(self, session, force=False):
        raise Conflict(
            f"session {session!r} was not stopped: agent 'a' is busy",
            errors=["agent 'a' is busy", "agent 'b' is busy"],
            warnings=["2 running worker(s) will be stopped: a, b"],
        )


def test_errors_show_as_the_docstring_and_the_page_say(ip, capsys):
    # What the magics show for an error: its first line, alone for bad usage, and indented
    # details when the server gave them. The module's docstring and docs/magics.md say that
    # (they used to promise one line for every error).
    ip.register_magics(MASMagics(ip, client_factory=_Refusing))
    try:
        ip.run_cell("%mas stop s", store_history=False)
        _, err = capsys.readouterr()
        assert err == (
            "UsageError: %mas stop: session 's' was not stopped: agent 'a' is busy\n"
            "  error: agent 'b' is busy\n"
            "  warning: 2 running worker(s) will be stopped: a, b\n"
            "  (%mas stop --force stops it anyway)\n"
        )
        ip.run_cell("%mas stop s --bogus", store_history=False)
        _, err = capsys.readouterr()
        assert err == (
            "UsageError: %mas stop: unrecognized arguments: --bogus (see %mas stop --help)\n"
        )
    finally:
        ip.register_magics(MASMagics(ip))
    doc = " ".join(magics.__doc__.split())
    page = " ".join((DOCS / "magics.md").read_text().split())
    assert "one `UsageError` line" not in doc
    for text in (doc, page):
        assert "never a traceback" in text and "bad usage" in text
        assert "`error: ...` and `warning: ...` lines" in text and "stop" in text


def test_the_daily_commands(mas, server_env, until):
    out, _, error = mas("%mas backends")
    assert error is None and "demo" in out and "available" in out
    assert "specialist" in mas("%mas personas")[0]
    assert "default" in mas("%mas templates")[0]

    out, _, error = mas(
        "%mas new churn --agent demo --task T-1 --terminal --env MAS_DEMO_DELAY=0.1"
    )
    assert error is None and "<Session churn quick active task='T-1'" in out
    assert "demo(idle)" in out  # new waits for the agent's prompt
    out, _, _ = mas("%mas use")
    assert "active session: churn" in out
    out, _, error = mas("%mas new churn")
    assert "a session named 'churn' already exists" in str(error)

    client = mas_jupyter.connect()
    out, _, _ = mas("%mas list")
    assert "churn" in out and "T-1" in out and "demo:idle" in out
    assert "busy" not in mas("%mas list --task T-1")[0]
    assert "no sessions" in mas("%mas list --status paused")[0]
    assert "terminal" in mas("%mas workers")[0]

    out, _, error = mas("%mas send hello there")
    assert error is None and "reply: hello there (2 words, 1 lines)" in out
    assert "waiting" not in out  # the progress line goes away in a terminal
    out, _, error = mas("%%mas send demo\nfirst line\nsecond line")
    assert error is None and "reply: first line second line (4 words, 2 lines)" in out
    out, _, error = mas("%%mas send demo --timeout 30\nthird")
    assert error is None and "reply: third" in out
    out, _, error = mas("%%mas send demo extra\nbody")
    assert "the line takes only WORKER" in str(error)

    assert "demo>" in mas("%mas screen")[0]
    assert "demo>" in mas("%mas screen demo -s churn")[0]
    out = mas("%mas log")[0]
    assert "--- you\nhello there" in out
    assert "message-sent" in mas("%mas activity")[0]
    assert mas("%mas activity churn --limit 2")[0].strip().count("\n") == 3  # head, rule, 2

    out, _, error = mas("%mas add --terminal --name sh2")
    assert error is None and "<Worker sh2 terminal/shell" in out
    out, _, error = mas("%mas add --agent demo --name helper --persona qa --env MAS_DEMO_DELAY=0")
    assert error is None and "persona=qa" in out and "idle" in out
    out, _, error = mas("%mas restart sh2")
    assert error is None and "<Worker sh2" in out
    # An agent restarted is at its prompt, as after %mas add (it showed `unknown`, and a send
    # right after got its start-up banner in the reply).
    out, _, error = mas("%mas restart helper")
    assert error is None and "<Worker helper" in out and "idle" in out, out
    out, _, error = mas("%mas console sh2")
    assert error is None and "WorkerConsole" in out

    out, _, error = mas("%mas pause")
    assert error is None and "paused" in out
    out, _, error = mas("%mas resume churn")
    assert error is None and "active" in out
    # As after %mas new: its agents at their prompts (before: `demo(unknown)`).
    assert "demo(idle)" in out and "helper(unknown)" not in out, out
    demo_idle(client, "churn")

    out, _, error = mas("%mas send /sleep 30 --no-wait")
    assert error is None and "not waiting" in out
    out, err, error = mas("%mas stop")
    assert isinstance(error, UsageError)
    lines = str(error).splitlines()
    assert lines[0].startswith("%mas stop: session 'churn' was not stopped: agent 'demo' is busy")
    assert lines[-1] == "  (%mas stop --force stops it anyway)"
    assert any(x.startswith("  warning: ") and "running worker(s)" in x for x in lines[1:-1])
    out, _, error = mas("%mas stop --force")
    assert error is None and "<Session churn quick stopped" in out
    # The check's preview ("1 running worker(s) will be stopped") is not repeated after it.
    assert "warning" not in out

    out, _, error = mas("%mas sessions")
    assert error is None and "SessionList" in out

    out, _, error = mas("%mas delete churn --purge")
    assert error is None and "deleted session churn and its workspace" in out
    assert "no active session" in mas("%mas use --clear")[0]
    assert "no sessions" in mas("%mas list")[0]


def test_delete_says_where_a_worktrees_changes_went_and_that_a_dir_is_kept(mas, server_env):
    git_repo(server_env.root / "magic-repo")
    client = mas_jupyter.connect()
    workspace = client.create_session("feat", "worktree", repo="magic-repo").workspace
    pathlib.Path(workspace, "a.txt").write_text("changed\n")
    out, _, error = mas("%mas delete feat --purge --force")
    assert error is None
    assert out.startswith(
        "deleted session feat and its workspace\n"
        "its uncommitted changes are saved on refs/mas/rescue/feat-"
    )
    assert "show refs/mas/rescue/feat-" in out and "branch NAME refs/mas/rescue/feat-" in out
    (server_env.root / "magic-dir").mkdir()
    folder = client.create_session("d", "dir", path="magic-dir").workspace
    out, _, error = mas("%mas delete d --purge")
    assert error is None
    assert (
        out == f"deleted session d and its transcripts; its folder {folder} is kept (it is yours)\n"
    )


def test_new_reads_repo_and_path_from_the_notebooks_folder(mas, server_env, monkeypatch):
    """A notebook in a subfolder: `--repo .` is the repository it sits in, `--path data` the
    folder beside it (the kernel's working directory is the notebook's folder)."""
    (server_env.root / "work").mkdir()
    repo = git_repo(server_env.root / "work" / "nb-repo")
    monkeypatch.chdir(repo)
    out, _, error = mas("%mas new nb-wt --kind worktree --repo .")
    assert error is None, error
    client = mas_jupyter.connect()
    assert client.session("nb-wt").data["repo"] == str(repo)
    (repo.parent / "data").mkdir()
    monkeypatch.chdir(repo.parent)
    out, _, error = mas("%mas new nb-dir --kind dir --path data")
    assert error is None, error
    assert client.session("nb-dir").workspace == str(repo.parent / "data")
    for name in ("nb-wt", "nb-dir"):
        client.delete(name)


def test_use_with_a_worker_and_an_explicit_session(mas):
    mas("%mas new one --agent demo")
    mas("%mas new two --terminal")
    out, _, error = mas("%mas use two terminal")
    assert error is None and "active session: two, worker: terminal" in out
    out, _, error = mas("%mas workers one")
    assert error is None and "demo" in out and "terminal" not in out
    demo_idle(mas_jupyter.connect(), "one")
    out, _, error = mas("%mas send -s one -w demo to one")
    assert error is None and "reply: to one (2 words, 1 lines)" in out


def test_cell_send_in_a_kernel_shows_progress_then_the_reply(server_env, monkeypatch, kernel):
    # (server_env and the variables are set before the kernel starts: it inherits them)
    status, messages = execute(
        kernel,
        f"import mas_jupyter\nmas_jupyter.connect({server_env.url!r}, {server_env.token!r})\n"
        "%load_ext mas_jupyter\n"
        "%mas new slow --agent demo --env MAS_DEMO_DELAY=1.5",
    )
    assert status == "ok", text_of(messages)
    status, messages = execute(kernel, "%%mas send\nslow <b>one</b>\n")
    assert status == "ok", text_of(messages)
    kinds = [m["msg_type"] for m in messages]
    first = next(m for m in messages if m["msg_type"] == "display_data")
    # the worker it went to, named (it said "the agent")
    assert "demo is working" in first["content"]["data"]["text/plain"]
    assert kinds.count("update_display_data") >= 2  # the progress line ticks, then the reply
    final = [m for m in messages if m["msg_type"] == "update_display_data"][-1]
    shown = final["content"]["data"]["text/html"]
    assert "reply: slow &lt;b&gt;one&lt;/b&gt; (2 words, 1 lines)" in shown
    assert "<b>one</b>" not in shown


REFUSED_SENDS = [
    ("%mas send -w nosuch hi", "no worker"),
    ("%mas send -s nosuch hi", "no session with id or name 'nosuch'"),
    ("%mas send hi --timeout 7200", "at most 3600 seconds"),
]


def test_a_refused_send_in_a_notebook_leaves_no_progress_line(server_env, kernel):
    """Before: `⏳ the agent is working… 0 s` was displayed, then blanked (an output a
    notebook keeps) above the error."""
    status, messages = execute(
        kernel,
        f"import mas_jupyter\nmas_jupyter.connect({server_env.url!r}, {server_env.token!r})\n"
        "%load_ext mas_jupyter\n"
        "%mas new refused --agent demo",
    )
    assert status == "ok", text_of(messages)
    for line, error in REFUSED_SENDS:
        status, messages = execute(kernel, line)
        assert status == "error" and error in text_of(messages), (line, text_of(messages))
        shown = [m["msg_type"] for m in messages if "display_data" in m["msg_type"]]
        assert shown == [], (line, text_of(messages))


def test_a_refused_send_in_a_terminal_prints_no_progress_line(mas):
    """Before: `⏳ the agent is working… 0 s` was printed above the error."""
    mas("%mas new refused-t --agent demo")
    for line, error in REFUSED_SENDS:
        out, err, raised = mas(line)
        assert isinstance(raised, UsageError) and error in str(raised), (line, out, err)
        assert out == "", line
        assert err.startswith("UsageError: %mas send: "), (line, err)


def test_send_in_terminal_ipython_shows_its_progress_in_place_and_erases_it(server_env, tmp_path):
    """IPython in a terminal: the progress line is on stderr, redrawn in place and erased
    before the reply (before: printed once, `… 0 s`, and left above the reply)."""
    env = {
        **server_env.env,
        "MAS_SERVER_URL": server_env.url,
        "MAS_TOKEN": server_env.token,
        "MAS_DEMO_DELAY": DEMO_DELAY,
        "IPYTHONDIR": str(tmp_path / "ipython"),
    }
    child = pexpect.spawn(
        sys.executable,
        ["-m", "IPython", "--simple-prompt", "--no-banner", "--colors=NoColor",
         "--HistoryManager.enabled=False"],
        env=env, cwd=str(tmp_path), encoding="utf-8", timeout=30, dimensions=(30, 100),
    )  # fmt: skip
    try:
        child.expect_exact("In [1]: ")
        child.sendline("%load_ext mas_jupyter")
        child.expect_exact("In [2]: ")
        child.sendline("%mas new ipy --agent demo")
        child.expect_exact("<Session ipy quick active")
        child.expect_exact("In [3]: ")
        child.sendline("%mas use ipy demo")
        child.expect_exact("In [4]: ")
        child.sendline("%mas send /sleep 2.5")
        child.expect_exact("\r⏳ demo is working… 1 s\x1b[K")
        child.expect_exact("\r⏳ demo is working… 2 s\x1b[K")
        child.expect_exact("\r\x1b[K")
        child.expect_exact("slept 2.5 s")
        child.expect_exact("In [5]: ")
        assert "⏳" not in child.before
        child.sendline("exit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)


def test_the_activity_log_names_the_worker_of_every_row(mas):
    """Before: activity-changed rows (`from=idle, to=busy`) did not say whose activity."""
    mas("%mas new act --agent demo --terminal")
    mas("%mas send -w demo hello")
    out, _, error = mas("%mas activity")
    assert error is None
    rows = [line for line in out.splitlines() if "activity-changed" in line]
    assert rows, out
    for row in rows:
        assert re.search(r"\sactivity-changed\s+(demo|terminal)\s+from=", row), row
    assert re.search(r"\sworker-created\s+demo\s+backend=demo$", out, re.M), out
    assert re.search(r"\smessage-sent\s+demo\s+text=hello$", out, re.M), out
    # A page without the entries that carry the name: the session's workers name them.
    out, _, error = mas("%mas activity --limit 2")
    rows = [line for line in out.splitlines() if "activity-changed" in line]
    assert rows, out
    assert all(re.search(r"\sactivity-changed\s+(demo|terminal)\s+from=", r) for r in rows), out
    html = mas_jupyter.connect().activities("act", limit=2)._repr_html_()
    assert "<th style='text-align:left'>worker</th>" in html
    assert (
        html.count("<td style='text-align:left'>demo</td>")
        + html.count("<td style='text-align:left'>terminal</td>")
        == 2
    )


INTERRUPTED = (
    "stopped waiting: the message was not sent if the agent was still busy; otherwise it goes "
    "on answering (see %mas screen)"
)


def test_interrupting_a_cell_send_drops_its_message(server_env, kernel, client, until):
    # The kernel's stop button on a `%mas send` that waits for a busy agent's turn: the
    # message is never typed. Before, the interrupted cell's request lived on in the kernel
    # and the agent got the message when it was free, after the user had given up on it.
    with Proxy(server_env.url) as proxy:
        status, messages = execute(
            kernel,
            f"import mas_jupyter\nmas_jupyter.connect({proxy.url!r}, {server_env.token!r})\n"
            "%load_ext mas_jupyter\n"
            "%mas new interrupted --agent demo",
        )
        assert status == "ok", text_of(messages)
        demo_idle(client, "interrupted")
        client.send("/sleep 30", session="interrupted", wait=False)
        until(lambda: client.worker("demo", session="interrupted").activity == "busy")
        cell = kernel.execute("%mas send never typed")
        until(lambda: b"never typed" in proxy.upstream, what="the send reached the server")
        kernel.parent.interrupt_kernel()
        status, messages = finish(kernel, cell)
        # The cell failed, as any interrupted cell does: it said `ok`, so a Run All went on
        # to the next cells after the user had pressed stop.
        assert status == "error", text_of(messages)
        assert text_of(messages).startswith(INTERRUPTED + "\n"), text_of(messages)
        assert [m["content"]["ename"] for m in messages if m["msg_type"] == "error"] == [
            "KeyboardInterrupt"
        ]
        client.input("\x03", session="interrupted")  # the sleep ends: the agent is free
        assert client.send("after", session="interrupted").text == "reply: after (1 words, 1 lines)"
        assert "never typed" not in client.output(session="interrupted").text


def test_no_wait_with_a_timeout_is_refused_as_by_the_cli(mas, client):
    """`--no-wait --timeout 5` was sent without its timeout, as if it had not been typed;
    `jupyter mas send` refuses the two together (docs/cli.md): so does %mas send, in the
    same words, before anything is sent."""
    mas("%mas new nwt-m --agent demo")
    out, err, error = mas("%mas send hi --no-wait --timeout 5")
    assert isinstance(error, UsageError), (out, err)
    assert str(error) == (
        "%mas send: --timeout is how long to wait for the reply: it cannot go with --no-wait"
    )
    assert not [r for r in client.transcript(session="nwt-m") if r.get("type") == "input"]
    mas("%mas use --clear")


def test_a_line_send_sends_the_message_as_typed(mas, ip, client):
    """The line was read as a shell's: an apostrophe was a usage error, quotes and
    backslashes were dropped and spaces collapsed, `$total` and `{cols}` were the kernel's
    variables, and `--no-wait` inside a sentence an option."""
    mas("%mas new verbatim-m --agent demo --env MAS_DEMO_DELAY=0.1")
    ip.user_ns.update(total=12345, cols=["a", "b"])
    typed = [
        "what's the mean of column x",
        'rename column "total sales" to  revenue',
        r"match \d+\.\d+ in the $total and {cols}",
        "use the --no-wait flag",
    ]
    for text in typed:
        out, err, error = mas(f"%mas send {text}")
        assert error is None, (out, err, error)
    # Options still go before the message, or after it.
    out, err, error = mas("%mas send -s verbatim-m last one --timeout 30")
    assert error is None, (out, err, error)
    sent = [r["text"] for r in client.transcript(session="verbatim-m") if r["type"] == "input"]
    assert [t.rstrip("\r\n") for t in sent] == [*typed, "last one"]
    mas("%mas use --clear")


def test_a_cell_send_takes_its_worker_after_the_options(mas, client):
    mas("%mas new cellw-m --agent demo --env MAS_DEMO_DELAY=0.1")
    mas("%mas use --clear")
    out, err, error = mas("%%mas send -s cellw-m --timeout 30 demo\nhello cell\n")
    assert error is None, (out, err, error)
    sent = [r["text"] for r in client.transcript(session="cellw-m") if r["type"] == "input"]
    assert [t.rstrip("\r\n") for t in sent] == ["hello cell"]


@pytest.mark.parametrize("line", ["%mas workers", "%mas send hi", "%mas screen", "%mas pause"])
def test_no_active_session_names_the_magics_way_not_pythons(mas, line):
    """The client's message says `pass session=...` and `mas.use(NAME)`: in a magic, the
    ways are %mas use and the subcommand's own argument."""
    mas("%mas use --clear")
    sub = line.split()[1]
    out, err, error = mas(line)
    assert isinstance(error, UsageError), (out, err)
    assert str(error) == (
        f"%mas {sub}: no session given and none is active: make one active with "
        f"%mas use NAME, or name one (see %mas {sub} --help)"
    )


def test_the_servers_words_for_a_field_are_the_magics_options(mas, client):
    """As in the CLI: `%mas new` and `%mas send` name their options, not the REST fields,
    and a session without workers names `%mas add`, not `add_worker(...)`."""
    mas("%mas use --clear")
    out, err, error = mas("%mas new no-repo-m --kind worktree")
    assert isinstance(error, UsageError), (out, err)
    assert str(error) == "%mas new: a worktree session needs --repo, the repository to branch"
    client.create_session("no-workers-m")
    out, err, error = mas("%mas send hi -s no-workers-m")
    assert str(error) == (
        "%mas send: session 'no-workers-m' has no workers: add one with "
        "%mas add --agent demo -s no-workers-m"
    )
    client.delete("no-workers-m", purge=True)
    mas("%mas new busy-m --agent demo")
    mas("%mas send /sleep 30 --no-wait")
    out, err, error = mas("%mas send too early --timeout 0.5")
    assert str(error) == (
        "%mas send: 'demo' was still busy after 0.5 s; the message was not sent (send it "
        "with --no-wait to type it ahead)"
    )
    client.delete("busy-m", purge=True, force=True)
    mas("%mas use --clear")
