"""`jupyter mas` against the test server, and `attach` driven through a pseudo-terminal."""

from __future__ import annotations

import asyncio
import io
import json
import os
import pathlib
import re
import shlex
import shutil
import socket
import subprocess
import sys

import pexpect
import pytest
from kernel_support import CLI, Proxy, demo_idle, detach, git_repo, spawn_cli, wait_until

import mas_jupyter
from mas_jupyter.kernel import ConnectionFailed
from mas_jupyter.kernel.transport import HTTPTransport
from tests.conftest import run_git

DOCS = pathlib.Path(__file__).parent.parent.parent / "docs"


def test_new_list_send_stop_delete(cli, client):
    code, out, err = cli("new", "cli-1", "--agent=demo", "--task=T-7", "--terminal")
    assert code == 0, err
    assert "<Session cli-1 quick active task='T-7'" in out
    code, out, _ = cli("list")
    assert code == 0 and "cli-1" in out and "T-7" in out
    code, out, _ = cli("list", "--json", "--task=T-7")
    assert json.loads(out)[0]["name"] == "cli-1"
    code, out, _ = cli("list", "--status=stopped")
    assert out.strip() == "no sessions"
    demo_idle(client, "cli-1")
    code, out, err = cli("send", "cli-1", "hello", "from", "the", "shell")
    assert code == 0, err
    assert "reply: hello from the shell (4 words, 1 lines)" in out
    code, out, _ = cli("send", "cli-1", "--worker=demo", stdin="piped in\n")
    assert "reply: piped in (2 words, 1 lines)" in out
    # Options may come between the arguments, as with git.
    code, out, err = cli("send", "cli-1", "--worker=demo", "--timeout=30", "between", "options")
    assert code == 0, err
    assert "reply: between options (2 words, 1 lines)" in out
    code, out, _ = cli("send", "cli-1", "/sleep 30", "--no-wait")
    assert code == 0 and "not waiting" in out
    code, out, err = cli("stop", "cli-1")
    assert code == 1 and "was not stopped" in err and "demo" in err
    code, out, err = cli("stop", "cli-1", "--force")
    assert code == 0 and "stopped cli-1" in out
    code, out, err = cli("delete", "cli-1", "--purge")
    assert code == 0 and "deleted cli-1 and its workspace" in out
    assert client.sessions() == []


def test_new_reads_repo_and_path_from_the_folder_it_is_run_in(cli, client, server):
    """`--repo=.` is the repository the shell is in, `--path=sub` the folder `sub` there,
    wherever that is under the server's root (the server alone would read them from its root)."""
    (server.root / "projects").mkdir()
    repo = git_repo(server.root / "projects" / "here-repo")
    code, _, err = cli("new", "here-wt", "--kind=worktree", "--repo=.", cwd=repo)
    assert code == 0, err
    assert client.session("here-wt").data["repo"] == str(repo)
    sub = server.root / "notes" / "sub"
    sub.mkdir(parents=True)
    code, _, err = cli("new", "here-dir", "--kind=dir", "--path=sub", cwd=sub.parent)
    assert code == 0, err
    assert client.session("here-dir").workspace == str(sub)
    other = repo.parent / "other"
    other.mkdir()
    code, _, err = cli("new", "up", "--kind=worktree", "--repo=../here-repo", cwd=other)
    assert code == 0, err
    assert client.session("up").data["repo"] == str(repo)
    code, _, err = cli("new", "nowhere", "--kind=dir", "--path=missing", cwd=sub)
    assert code == 1 and f"'{sub / 'missing'}' is not an existing directory" in err, err


def test_delete_says_where_a_worktrees_changes_went_and_that_a_dir_is_kept(cli, client, server):
    repo = git_repo(server.root / "cli-repo")
    code, _, err = cli("new", "feat", "--kind=worktree", "--repo=cli-repo", cwd=server.root)
    assert code == 0, err
    pathlib.Path(client.session("feat").workspace, "a.txt").write_text("changed\n")
    code, out, err = cli("delete", "feat", "--purge")
    assert (code, out) == (1, "") and "uncommitted" in err
    assert "delete with --force to save them" in err, err  # the option, not "with force"
    code, out, err = cli("delete", "feat", "--purge", "--force")
    assert code == 0, err
    first, second = out.splitlines()
    assert first == "deleted feat and its workspace"
    assert re.match(r"its uncommitted changes are saved on refs/mas/rescue/feat-\S+: `", second)
    # The commands it names, run as printed, show the changes and get them back.
    show, keep = re.findall(r"`([^`]+)`", second)
    shown = subprocess.run(show, shell=True, capture_output=True, text=True, check=True)
    assert "+changed" in shown.stdout
    (repo / "mine.txt").write_text("the user's own work in progress\n")
    subprocess.run(keep.replace("NAME", "rescued"), shell=True, check=True)
    # On a branch of their own, the user's checkout untouched (`checkout -b` was printed: it
    # switched the user's checkout, and refused when its changes were in the way).
    assert run_git("show", "rescued:a.txt", cwd=repo) == "changed\n"
    assert run_git("status", "--porcelain", cwd=repo) == "?? mine.txt\n"
    assert (repo / "a.txt").read_text() == "a\n"

    mine = server.root / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine\n")
    folder = client.create_session("d", "dir", path="mine").workspace
    code, out, err = cli("delete", "d", "--purge")
    assert code == 0, err
    assert out == f"deleted d and its transcripts; its folder {folder} is kept (it is yours)\n"
    assert (mine / "notes.txt").read_text() == "mine\n"


def test_pause_resume_and_restart(cli, client):
    code, _, err = cli("new", "cli-2", "--agent=demo")
    assert code == 0, err
    demo_idle(client, "cli-2")
    pid = client.worker("demo", session="cli-2").data["pid"]
    code, out, err = cli("restart", "cli-2")  # the agent by default
    assert code == 0, err
    assert out.startswith("<Worker demo agent/demo")
    restarted = client.worker("demo", session="cli-2")
    assert restarted.status in ("starting", "running") and restarted.data["pid"] != pid
    code, out, err = cli("pause", "cli-2")
    assert code == 0 and "<Session cli-2 quick paused" in out, err
    assert client.worker("demo", session="cli-2").status == "exited"
    code, out, err = cli("resume", "cli-2")
    assert code == 0 and "<Session cli-2 quick active" in out, err
    assert "demo(idle)" in out, out  # as after `new`: its agent at its prompt, not `unknown`
    demo_idle(client, "cli-2")
    code, _, err = cli("restart", "cli-2", "nosuch")
    assert code == 1 and "no worker" in err and "Traceback" not in err
    code, _, err = cli("pause")
    assert code == 2 and "usage: jupyter mas pause SESSION" in err
    client.delete("cli-2", purge=True)


def test_errors_first_line_then_details_and_the_exit_status(cli, tmp_path, server):
    # 1: the command ran and could not do it; one line in the CLI's format.
    code, out, err = cli("delete", "nosuch")
    assert code == 1 and err.strip() == ("jupyter mas delete: no session with id or name 'nosuch'")
    code, _, err = cli("new", "--persona=pm")
    assert code == 1 and "--persona needs --agent" in err
    # A bad option value is the CLI's line too (not traitlets' "CRITICAL | Bad config ...").
    code, out, err = cli("list", "--status=bogus")
    assert (code, out) == (1, "")
    assert err == "jupyter mas list: --status must be one of active, paused, stopped, not 'bogus'\n"
    code, _, err = cli("send", "x", "hi", "--timeout=soon")
    assert (
        err == "jupyter mas send: --timeout must be a number of seconds more than 0, not 'soon'\n"
    )
    assert code == 1
    code, _, err = cli("list", "--log-level=loud")
    assert code == 1 and err.startswith("jupyter mas list: --log-level must be one of ")
    # 2: the command line cannot be read; what is wrong, then the usage.
    code, _, err = cli("send")
    assert code == 2 and err == (
        "jupyter mas send: expected 1 argument, got 0\n"
        "usage: jupyter mas send SESSION [TEXT...] [--worker=W] [--no-wait] [--timeout=S]\n"
    )
    code, _, err = cli("new", "two", "names")
    assert code == 2 and err.startswith("jupyter mas new: unexpected argument: names\n")
    assert "\nusage: jupyter mas new [NAME] [--agent=BACKEND]" in err
    code, _, err = cli("list", "extra", "more")
    assert code == 2 and err.startswith("jupyter mas list: unexpected arguments: extra more\n")
    # An unknown --option=value is refused, not ignored (it would list every session).
    code, out, err = cli("list", "--stauts=paused")
    assert (code, out) == (2, "")
    assert err == (
        "jupyter mas list: unrecognized option --stauts\n"
        "usage: jupyter mas list [--status=S] [--kind=K] [--task=T] [--json]\n"
    )
    code, _, err = cli("list", "--status")
    assert code == 2 and err.startswith("jupyter mas list: argument --status: expected one")
    code, out, err = cli("bogus")
    assert (code, out) == (2, "")
    assert err.startswith("jupyter mas: unknown command 'bogus'\nusage: jupyter mas {list,")
    code, out, err = cli()
    assert (code, out) == (2, "")
    assert err.startswith("usage: jupyter mas {list,new,send,attach,pause,resume,restart,stop,")
    code, out, err = cli("list", "--help")
    assert code == 0 and "--status" in out and err == ""
    env = {k: v for k, v in cli.env.items() if not k.startswith("MAS_")}
    env["JUPYTER_RUNTIME_DIR"] = str(tmp_path / "none")
    p = subprocess.run([*CLI, "list"], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert p.returncode == 1 and "no running Jupyter server found" in p.stderr
    assert "Traceback" not in p.stderr


def test_a_url_that_is_not_http_is_one_line_and_the_clients_error(cli):
    code, out, err = cli("list", "--url", "ftp://me:secret@x/", "--token", "t")
    assert (code, out) == (1, "")
    assert (
        err
        == "jupyter mas list: a Jupyter server's URL starts with http:// or https://, not ftp://\n"
    )
    env = {**cli.env, "MAS_SERVER_URL": "ws://x/"}
    p = subprocess.run([*CLI, "list"], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and p.stderr.endswith(", not ws://\n"), p.stderr
    # The Python client says the same, as the client's error.
    with pytest.raises(ConnectionFailed, match=r"^a Jupyter server's URL starts with http://"):
        mas_jupyter.connect("ftp://x/")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-5", "0"])
def test_a_timeout_is_a_number_of_seconds_more_than_0(cli, value):
    code, out, err = cli("send", "nosuch", "hi", f"--timeout={value}")
    assert (code, out) == (1, "")
    assert err == (
        f"jupyter mas send: --timeout must be a number of seconds more than 0, not '{value}'\n"
    )


def test_a_timeout_over_the_servers_limit_is_the_servers_one_line(cli, client):
    client.create_session("tmo", agent="demo")
    code, out, err = cli("send", "tmo", "hi", "--timeout=7200")
    assert (code, out) == (1, "")
    assert err == "jupyter mas send: timeout must be more than 0 and at most 3600 seconds\n"
    client.delete("tmo", purge=True, force=True)


def test_no_wait_with_a_timeout_is_refused_in_the_clis_words(cli, client):
    """The two together are refused (docs/cli.md) naming the options, not the REST API's
    `wait (true)`, and before anything is sent."""
    client.create_session("nwt", agent="demo")
    demo_idle(client, "nwt")
    code, out, err = cli("send", "nwt", "hi", "--no-wait", "--timeout=5")
    assert (code, out) == (1, "")
    assert err == (
        "jupyter mas send: --timeout is how long to wait for the reply: it cannot go with "
        "--no-wait\n"
    )
    log = client.transcript(session="nwt")
    assert not [r for r in log if r.get("type") == "input"], "nothing was sent"
    client.delete("nwt", purge=True, force=True)


def test_options_before_the_command_and_a_mistyped_command(cli, client):
    """`jupyter mas --json list` said "unknown command 'list'" (traitlets took the options
    as its own); `jupyter mas lst --json` gave traitlets' parser's error and usage."""
    client.create_session("before")
    code, out, err = cli("--json", "list")
    assert code == 0 and err == "", err
    assert [s["name"] for s in json.loads(out)] == ["before"]
    code, out, err = cli("lst", "--json")
    assert (code, out) == (2, "")
    assert err.startswith("jupyter mas: unknown command 'lst'; did you mean 'list'?\nusage: ")


@pytest.mark.parametrize(
    "argv",
    [
        ("stop", "s", "--force", "--purge"),
        ("delete", "s", "--bogus"),
        ("list", "--jsno"),
        ("send", "s", "hi", "--wait", "--timeout=5"),
    ],
)
def test_an_unknown_option_without_a_value_is_unrecognized(cli, argv):
    """`--purge` to stop is unknown, as `--stauts=x` is: not an option missing its value."""
    code, out, err = cli(*argv)
    unknown = next(a for a in argv if a in ("--purge", "--bogus", "--jsno", "--wait"))
    assert (code, out) == (2, "")
    assert err.startswith(f"jupyter mas {argv[0]}: unrecognized option {unknown}\nusage: "), err


def test_a_closed_stdout_ends_quietly_with_status_141(cli):
    read, write = os.pipe()
    os.close(read)  # every write to the pipe fails: no race with the reader
    try:
        p = subprocess.run(
            [*CLI, "list", "--json"],
            env=cli.env,
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write)
    assert (p.returncode, p.stderr) == (141, "")


@pytest.mark.parametrize(
    "option",
    [
        "agent",
        "persona",
        "kind",
        "template",
        "repo",
        "branch",
        "base",
        "path",
        "task",
        "url",
        "token",
        "config",
    ],
)
def test_an_empty_option_is_an_error_not_the_default(cli, client, option):
    extra = ["--agent=demo"] if option == "persona" else []
    code, out, err = cli("new", "empty-opt", *extra, f"--{option}=")
    assert (code, out) == (1, "")
    assert err == f"jupyter mas new: --{option} must not be empty\n"
    assert client.sessions() == []


def test_an_empty_argument_is_an_error_in_the_clis_words(cli, client):
    code, out, err = cli("pause", "")
    assert (code, out, err) == (1, "", "jupyter mas pause: SESSION must not be empty\n")
    client.create_session("empty-arg", terminal=True)
    code, out, err = cli("restart", "empty-arg", "")  # not the session's default worker
    assert (code, out, err) == (1, "", "jupyter mas restart: WORKER must not be empty\n")
    code, out, err = cli("new", "")
    assert (code, out, err) == (1, "", "jupyter mas new: NAME must not be empty\n")
    client.delete("empty-arg", purge=True, force=True)


def test_hints_name_the_clis_way_not_pythons(cli, client):
    with socket.socket() as bound:  # bound, not listening: a connection is refused
        bound.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{bound.getsockname()[1]}/"
        code, out, err = cli("list", f"--url={url}")
        # The Python client's own words are unchanged.
        with pytest.raises(ConnectionFailed, match=r"pass url= to mas_jupyter.connect\)$"):
            asyncio.run(HTTPTransport(url, "t").request("GET", "sessions"))
    assert (code, out) == (1, "")
    assert err.startswith(f"jupyter mas list: cannot reach the Jupyter server at {url}: ")
    assert err.endswith(
        "is it running? (pass --url=URL --token=TOKEN, or set MAS_SERVER_URL and MAS_TOKEN)\n"
    )
    code, out, err = cli("list", "--token=wrong")
    assert (code, out) == (1, "")
    assert err.endswith("check the token (--token, MAS_TOKEN, or the token in --url)\n"), err


def test_the_servers_words_for_a_field_are_the_clis_options(cli, client):
    """The server names the request's fields (`needs 'repo'`, `'wait': false`), and the
    client's no-workers hint names `add_worker(...)`: the CLI names its own options and ways."""
    code, out, err = cli("new", "no-repo", "--kind=worktree")
    assert (code, out) == (1, "")
    assert err == "jupyter mas new: a worktree session needs --repo, the repository to branch\n"
    code, _, err = cli("new", "quick-repo", "--repo=.")
    assert (code, err) == (1, "jupyter mas new: --repo does not apply to a quick session\n")
    client.create_session("no-workers")
    code, out, err = cli("send", "no-workers", "hi")
    assert (code, out) == (1, "")
    assert err == (
        "jupyter mas send: session 'no-workers' has no workers: add one with %mas add --agent "
        "demo in a notebook, or + on it in Lab's side panel\n"
    )
    client.delete("no-workers", purge=True)
    assert cli("new", "busy-cli", "--agent=demo")[0] == 0
    demo_idle(client, "busy-cli")
    assert cli("send", "busy-cli", "/sleep 30", "--no-wait")[0] == 0
    code, out, err = cli("send", "busy-cli", "too early", "--timeout=0.5")
    assert (code, out) == (1, "")
    assert err == (
        "jupyter mas send: 'demo' was still busy after 0.5 s; the message was not sent (send "
        "it with --no-wait to type it ahead)\n"
    )
    client.delete("busy-cli", purge=True, force=True)


def test_a_server_without_the_extension_is_one_line(server_without_mas, tmp_path):
    plain = server_without_mas
    env = {**plain.env, "MAS_SERVER_URL": plain.url, "MAS_TOKEN": plain.token}
    p = subprocess.run([*CLI, "list"], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert (p.returncode, p.stdout) == (1, "")
    # The message itself is pinned in test_client.py; here, that the CLI shows it as one line.
    message = HTTPTransport(plain.url, plain.token).not_serving().message
    assert p.stderr == f"jupyter mas list: {message}\n"


def _page_examples(heading: str) -> list[tuple[str, str]]:
    """The `$ command` lines of the console block under `heading` in docs/cli.md, each with
    the output the page shows for it."""
    text = DOCS.joinpath("cli.md").read_text()
    section = text[text.index(f"\n## {heading}\n") :]
    block = re.search(r"```console\n(.*?)```", section, re.S).group(1)
    steps: list[tuple[str, str]] = []
    for line in block.splitlines(keepends=True):
        if line.startswith("$ "):
            steps.append((line[2:].strip(), ""))
        else:
            steps[-1] = (steps[-1][0], steps[-1][1] + line)
    return steps


@pytest.mark.parametrize("heading", ["Examples", "Errors and exit status"])
def test_the_pages_examples_print_what_the_page_shows(cli, client, tmp_path, heading):
    """docs/cli.md's console examples, run as written (through a shell, `jupyter` a stand-in
    that runs this CLI), print exactly what the page shows."""
    for session in client.sessions():
        client.delete(session.id, purge=True, force=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "jupyter"
    shim.write_text(
        f'#!/bin/sh\n[ "$1" = mas ] || exit 99\nshift\nexec {CLI[0]} -m {CLI[2]} "$@"\n'
    )
    shim.chmod(0o755)
    env = {**cli.env, "PATH": f"{bin_dir}:{cli.env.get('PATH', '')}"}
    steps = _page_examples(heading)
    assert len(steps) >= 6
    for command, shown in steps:
        p = subprocess.run(
            ["bash", "-c", command],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=60,
        )
        assert p.stdout == shown, f"$ {command}"
    assert client.sessions() == []


def test_found_from_the_servers_root(server, tmp_path):
    env = {**server.env}
    p = subprocess.run([*CLI, "list"], env=env, cwd=server.root, capture_output=True, text=True)
    assert p.returncode == 0 and "no sessions" in p.stdout, p.stderr


def test_attach_types_resizes_and_detaches(cli, client):
    client.create_session("att", terminal=True)
    # The command `connect` gives for the worker (before, only tmux workers had one).
    [entry] = client.connect_info("att")["workers"]
    assert entry["attach"] == "jupyter mas attach att terminal"
    child = spawn_cli(cli, *shlex.split(entry["attach"])[2:])
    child.expect_exact("detach with Ctrl-]")
    child.send("echo attached-$((6*7))\r")
    child.expect_exact("attached-42")
    child.send("stty size\r")
    child.expect_exact("30 100")
    assert client.worker("terminal", session="att").cols == 100
    child.setwinsize(25, 90)
    child.send("stty size\r")
    child.expect_exact("25 90")
    assert detach(child) == 0
    # The worker goes on after the terminal detached.
    assert client.worker("terminal", session="att").status == "running"


def test_attach_ends_when_the_worker_exits_and_ctrl_c_reaches_it(cli, client):
    client.create_session("att2", terminal=True)
    child = spawn_cli(cli, "attach", "att2")
    child.expect_exact("detach with Ctrl-]")
    child.send("sleep 100\r")
    child.send("\x03")  # raw mode: Ctrl-C goes to the worker, not to the CLI
    child.send("echo still-$((1+1))\r")
    child.expect_exact("still-2")
    child.send("exit 3\r")
    child.expect_exact("[worker terminal exited with code 3]")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
@pytest.mark.parametrize("how", ["detached", "exited"])
def test_attach_gives_the_terminal_back_as_it_found_it(cli, client, how):
    # A tmux worker's console is the `tmux attach` client's screen: it switches the terminal
    # to the alternate screen, and on application cursor keys. Detached with Ctrl-], or once
    # the worker exited, the user's own terminal was left that way (their scrollback hidden,
    # their arrow keys odd) until they ran `reset`.
    client.create_session(f"att-alt-{how}")
    client.add_worker("sh", kind="terminal", runtime="tmux", session=f"att-alt-{how}")
    child = spawn_cli(cli, "attach", f"att-alt-{how}", "sh")
    child.logfile_read = seen = io.StringIO()
    child.expect_exact("detach with Ctrl-]")
    child.send("echo inside-$((6*7))\r")
    child.expect_exact("inside-42")
    if how == "detached":
        assert detach(child) == 0
    else:
        child.send("exit 3\r")
        child.expect_exact("[worker sh exited with code 3]")
        child.expect(pexpect.EOF)
        child.close()
    everything = seen.getvalue()
    alternate = [m.group(1) for m in re.finditer(r"\x1b\[\?(?:1049|1047|47)([hl])", everything)]
    assert alternate and alternate[-1] == "l", alternate
    keys = [m.group(1) for m in re.finditer(r"\x1b\[\?1([hl])", everything)]
    assert not keys or keys[-1] == "l", keys


def test_attach_says_its_worker_was_restarted_not_that_it_exited(cli, client):
    client.create_session("att6", terminal=True)
    child = spawn_cli(cli, "attach", "att6")
    child.expect_exact("detach with Ctrl-]")
    child.send("echo before-$((6*7))\r")
    child.expect_exact("before-42")
    client.restart("terminal", session="att6")
    # Before: "[worker terminal exited with code -1]", as if it had crashed.
    child.expect_exact("[worker terminal was restarted; attach again to follow it]")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert client.worker("terminal", session="att6").status == "running"


def test_attach_reconnects_after_a_dropped_connection_and_ends_when_the_worker_is_gone(
    cli, client, server
):
    client.create_session("att4", terminal=True)
    with Proxy(server.url) as proxy:
        child = spawn_cli(
            cli, "attach", "att4", "terminal", env={**cli.env, "MAS_SERVER_URL": proxy.url}
        )
        child.expect_exact("detach with Ctrl-]")
        child.send("echo before-$((6*7))\r")
        child.expect_exact("before-42")

        proxy.cut()  # a network blip: the worker runs on
        child.expect_exact("[connection lost; reconnecting...]")
        child.expect_exact("[reconnected]")
        child.expect_exact("before-42")  # the replay redraws the screen
        child.send("echo after-$((6*8))\r")
        child.expect_exact("after-48")

        # Down for longer, and the worker deleted meanwhile: attach stops trying and says why.
        proxy.cut(hold=True)
        child.expect_exact("[connection lost; reconnecting...]")
        accepted = proxy.accepted
        wait_until(lambda: proxy.accepted > accepted, 10, "a refused try")
        client.delete_worker("terminal", session="att4")
        proxy.restore()
        child.expect_exact("[the connection to the worker closed: the worker no longer exists]")
        child.expect(pexpect.EOF)
        child.close()
    assert child.exitstatus == 0
    assert "Traceback" not in child.before


def test_attach_to_an_exited_worker_says_how_to_restart_it_with_the_cli(cli, client):
    client.create_session("att5", terminal=True)
    client.input("exit 3\r", "terminal", session="att5")
    wait_until(lambda: client.worker("terminal", session="att5").status == "exited", 15, "exit")
    child = spawn_cli(cli, "attach", "att5", "terminal")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1
    assert child.before.strip() == (
        "jupyter mas attach: worker 'terminal' has exited (code 3); restart it first "
        "(jupyter mas restart att5 terminal)"
    )


def test_attach_refuses_without_a_terminal(cli, client):
    client.create_session("att3", terminal=True)
    code, _, err = cli("attach", "att3")
    assert code == 1 and "attach needs a terminal" in err


def test_jupyter_finds_the_subcommand(cli):
    import os
    import shutil

    script = os.path.join(os.path.dirname(sys.executable), "jupyter-mas")
    if not os.path.exists(script):
        pytest.skip("the package is not installed with its scripts (pip install -e .)")
    jupyter = shutil.which("jupyter", path=os.path.dirname(sys.executable))
    p = subprocess.run(
        [jupyter, "mas", "list"], env=cli.env, capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 0, p.stderr


def test_a_send_still_busy_at_its_timeout_exits_1_and_says_how_to_watch_the_agent(cli, client):
    """Before: status 0, and only `[timed out waiting; the agent is still working]` on stdout:
    a script took the missing reply for one."""
    code, _, err = cli("new", "tmo-busy", "--agent=demo")
    assert code == 0, err
    demo_idle(client, "tmo-busy")
    code, out, err = cli("send", "tmo-busy", "/sleep 30", "--timeout=1")
    assert code == 1, (out, err)
    assert out.startswith("[timed out waiting; the agent is still working]\n")
    assert err == (
        "jupyter mas send: demo is still busy after 1 s (no reply yet); see what it is doing "
        "with: jupyter mas attach tmo-busy demo (Ctrl-] detaches, the agent goes on)\n"
    )
    # The command it names shows the agent at work, and detaching leaves it working.
    child = spawn_cli(cli, "attach", "tmo-busy", "demo")
    child.expect_exact("detach with Ctrl-]")
    child.expect_exact("working... (")
    assert detach(child) == 0
    assert client.worker("demo", session="tmo-busy").activity == "busy"
    client.delete("tmo-busy", purge=True, force=True)


def test_send_shows_its_progress_on_a_terminal_and_nothing_in_a_pipe(cli, client, tmp_path):
    """Before: nothing at all while it waited, on a terminal too."""
    code, _, err = cli("new", "prog", "--agent=demo")
    assert code == 0, err
    demo_idle(client, "prog")
    # On a terminal: the progress line from the first second, redrawn in place on stderr,
    # then erased just before the reply.
    child = spawn_cli(cli, "send", "prog", "/sleep 2.5")
    child.expect_exact("\r⏳ demo is working… 1 s\x1b[K")
    child.expect_exact("\r⏳ demo is working… 2 s\x1b[K")
    child.expect_exact("\r\x1b[Kslept 2.5 s\r\n")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0 and child.before == ""
    # stdout to a file, stderr on the terminal: the progress is on stderr only.
    out_file = tmp_path / "reply.txt"
    child = pexpect.spawn(
        "bash", ["-c", 'exec "$@" > "$0"', str(out_file), *CLI, "send", "prog", "/sleep 1.5"],
        env=cli.env, encoding="utf-8", timeout=20,
    )  # fmt: skip
    child.expect_exact("\r⏳ demo is working… 1 s\x1b[K")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0 and child.before == "\r\x1b[K"
    assert out_file.read_text() == "slept 1.5 s\n"
    # In a pipe (a script): nothing extra.
    code, out, err = cli("send", "prog", "/sleep 1.5")
    assert (code, out, err) == (0, "slept 1.5 s\n", "")
    client.delete("prog", purge=True, force=True)


def test_ctrl_c_while_a_send_waits_ends_it_with_one_line_and_status_130(cli, client):
    """Before: a KeyboardInterrupt traceback."""
    code, _, err = cli("new", "intr", "--agent=demo")
    assert code == 0, err
    demo_idle(client, "intr")
    child = spawn_cli(cli, "send", "intr", "/sleep 30")
    child.expect_exact("⏳ demo is working… 1 s")
    child.sendintr()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130, (child.exitstatus, child.signalstatus, child.before)
    assert "jupyter mas: interrupted" in child.before and "Traceback" not in child.before
    client.delete("intr", purge=True, force=True)


def test_list_aligns_wide_characters_by_their_width_on_screen(cli, client):
    """Before: columns were aligned by code points, so a CJK or emoji task pushed the
    workers column right and a combining accent pulled it left."""
    for name, task in (
        ("cjk", "修复登录"),
        ("emoji", "🚀 launch"),
        ("accent", "cafe\u0301"),  # é as e and a combining accent: 4 columns, 5 code points
        ("ascii", "T-42"),
    ):
        client.create_session(name, task=task, terminal=True)
    code, out, err = cli("list")
    assert code == 0, err
    lines = out.splitlines()
    # The workers column starts at the same place on screen in every row.
    expected = [
        "session  kind   status  task       workers",
        "-------  -----  ------  ---------  -----",
        "cjk      quick  active  修复登录   terminal:",
        "emoji    quick  active  🚀 launch  terminal:",
        "accent   quick  active  cafe\u0301       terminal:",
        "ascii    quick  active  T-42       terminal:",
    ]
    assert len(lines) == len(expected), out
    for line, start in zip(lines, expected, strict=True):
        assert line.startswith(start), (line, start)


def test_a_worker_not_running_is_refused_with_the_command_that_runs_it_again(cli, client):
    """docs/cli.md: the hints name `jupyter mas resume SESSION` for a worker of a paused or
    stopped session and `jupyter mas restart SESSION WORKER` for one that exited; `send` and
    `restart` said only `resume it first` / `restart it first` (the server's words)."""
    client.create_session("hint", agent="demo")
    demo_idle(client, "hint")
    client.pause("hint")
    code, out, err = cli("send", "hint", "hi")
    assert (code, out) == (1, "")
    assert err == (
        "jupyter mas send: worker 'demo' is not running: session 'hint' is paused; resume it "
        "first (jupyter mas resume hint)\n"
    )
    code, out, err = cli("restart", "hint")
    assert (code, out) == (1, "")
    assert err == (
        "jupyter mas restart: session 'hint' is paused; resume it first (jupyter mas resume hint)\n"
    )
    client.resume("hint")
    demo_idle(client, "hint")
    reply = client.send("/exit", session="hint")
    assert reply.ended
    code, out, err = cli("send", "hint", "hi")
    assert (code, out) == (1, "")
    assert err == (
        "jupyter mas send: worker 'demo' has exited (code 0); restart it first (jupyter mas "
        "restart hint demo)\n"
    )
    # Other refusals are left as they are.
    code, _, err = cli("send", "hint", "hi", "--worker=nosuch")
    assert err == "jupyter mas send: no worker with id or name 'nosuch' in session 'hint'\n"
    client.delete("hint", purge=True, force=True)


@pytest.mark.parametrize(
    "command", ["list", "new", "send", "attach", "pause", "resume", "restart", "stop", "delete"]
)
def test_a_subcommands_help_shows_its_usage_and_what_each_option_does(cli, command):
    """`jupyter mas new --help` listed `--repo=<Unicode>`, `--template=<Unicode>`, ... with
    no word of what they do, `send --help` a `--timeout=<_Seconds>`, and no usage line."""
    from jupyter_core.application import base_aliases, base_flags

    from mas_jupyter.kernel.cli import MASApp

    app = MASApp.subcommands[command][0]
    code, out, err = cli(command, "--help")
    assert (code, err) == (0, "")
    assert f"\nusage: jupyter mas {command} {app.usage}".rstrip() + "\n" in out
    assert "<_" not in out
    lines = out.splitlines()
    ours = [o for o in [*app.aliases, *app.flags] if o not in {*base_aliases, *base_flags}]
    assert "url" in ours
    for option in ours:
        at = next(i for i, line in enumerate(lines) if re.match(rf"--{option}\b", line))
        assert lines[at + 1].startswith("    ") and not re.match(
            r"\s+(Default|Choices|Equivalent to):", lines[at + 1]
        ), f"--{option} has no help: {lines[at : at + 3]}"
