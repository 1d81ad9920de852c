"""Worktree sessions on real git repositories."""

from __future__ import annotations

import asyncio
import os
import re
import stat
import time

import pytest

from mas_jupyter.core.errors import ConflictError, ForbiddenError, InvalidError
from mas_jupyter.core.gitrun import git
from mas_jupyter.core.personas import PERSONA_END
from tests.conftest import run_git


async def test_worktree_session_branches_from_base(manager, make_repo):
    repo = make_repo()
    session = await manager.create_session({"kind": "worktree", "name": "churn", "repo": repo})
    ws = session["workspace"]
    assert session["branch"] == "mas/churn"
    assert run_git("rev-parse", "--abbrev-ref", "HEAD", cwd=ws).strip() == "mas/churn"
    assert os.path.isfile(os.path.join(ws, "data.csv"))
    # The engine's own files never count as changes in the worktree.
    assert run_git("status", "--porcelain", cwd=ws) == ""
    assert run_git("status", "--porcelain", cwd=repo) == ""
    listed = run_git("worktree", "list", "--porcelain", cwd=repo)
    assert f"worktree {ws}" in listed


async def test_worktree_with_explicit_branch_and_base(manager, make_repo):
    repo = make_repo()
    first = run_git("rev-parse", "HEAD", cwd=repo).strip()
    (open(os.path.join(repo, "more.txt"), "w")).close()
    run_git("add", "more.txt", cwd=repo)
    run_git("commit", "-q", "-m", "second", cwd=repo)
    session = await manager.create_session(
        {"kind": "worktree", "repo": repo, "branch": "feature/x", "base": "HEAD~1"}
    )
    ws = session["workspace"]
    assert run_git("rev-parse", "HEAD", cwd=ws).strip() == first
    assert session["branch"] == "feature/x"
    assert not os.path.exists(os.path.join(ws, "more.txt"))


@pytest.mark.parametrize(
    "extra, error, message",
    [
        ({"branch": "-delete"}, InvalidError, "not a valid git branch name"),
        ({"branch": "a..b"}, InvalidError, "not a valid git branch name"),
        ({"branch": "a b"}, InvalidError, "not a valid git branch name"),
        ({"branch": "x.lock"}, InvalidError, "not a valid git branch name"),
        ({"branch": "HEAD"}, InvalidError, "not a valid git branch name"),
        ({"base": "--upload-pack=evil"}, InvalidError, "not a valid git revision"),
        ({"base": "main..evil"}, InvalidError, "not a valid git revision"),
        ({"base": "no-such-branch"}, InvalidError, "is not a commit"),
        ({"branch": "main"}, ConflictError, "already exists"),
    ],
)
async def test_bad_branch_and_base_create_nothing(manager, make_repo, extra, error, message):
    repo = make_repo()
    branches = run_git("branch", "--list", cwd=repo)
    with pytest.raises(error, match=message):
        await manager.create_session({"kind": "worktree", "repo": repo, **extra})
    assert manager.store.count_sessions() == 0
    assert run_git("branch", "--list", cwd=repo) == branches
    assert run_git("worktree", "list", cwd=repo).count("\n") == 1


async def test_a_refused_create_never_deletes_the_users_branch(manager, make_repo):
    repo = make_repo()
    run_git("checkout", "-q", "-b", "topic", cwd=repo)
    with open(os.path.join(repo, "precious.txt"), "w") as f:
        f.write("work\n")
    run_git("add", "precious.txt", cwd=repo)
    run_git("commit", "-q", "-m", "precious work", cwd=repo)
    run_git("checkout", "-q", "main", cwd=repo)
    run_git("branch", "mas/s", cwd=repo)  # at the base (HEAD), as a create would make it
    tips = run_git("show-ref", "--heads", cwd=repo)
    # Each is refused because the branch exists; each branch points at the base asked for.
    for spec in ({"branch": "topic", "base": "topic"}, {"name": "s"}, {"branch": "mas/s"}):
        with pytest.raises(ConflictError, match="already exists"):
            await manager.create_session({"kind": "worktree", "repo": repo, **spec})
    assert run_git("show-ref", "--heads", cwd=repo) == tips
    assert manager.store.count_sessions() == 0


async def test_a_create_that_fails_after_git_made_its_branch_removes_it(
    manager, make_repo, monkeypatch
):
    repo = make_repo()
    branches = run_git("branch", "--list", cwd=repo)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(manager.workspaces, "write_metadata", disk_full)
    with pytest.raises(OSError, match="No space"):
        await manager.create_session({"kind": "worktree", "repo": repo, "name": "s"})
    assert run_git("branch", "--list", cwd=repo) == branches
    assert run_git("worktree", "list", cwd=repo).count("\n") == 1
    assert manager.store.count_sessions() == 0


async def test_a_failed_create_leaves_no_gap_in_generated_names(manager, make_repo):
    repo = make_repo()
    with pytest.raises(InvalidError, match="is not a commit"):
        await manager.create_session({"kind": "worktree", "repo": repo, "base": "nope"})
    session = await manager.create_session({"kind": "worktree", "repo": repo})
    assert session["name"] == "session-001"


async def test_a_subfolder_or_another_worktree_names_its_repository(manager, make_repo):
    repo = make_repo()
    os.makedirs(os.path.join(repo, "src", "deep"))
    first = await manager.create_session({"kind": "worktree", "repo": f"{repo}/src/deep"})
    assert first["repo"] == os.path.realpath(repo)
    # A worktree's `.git` is a file: the session names the repository it belongs to, so it
    # outlives the worktree it was made from.
    second = await manager.create_session({"kind": "worktree", "repo": first["workspace"]})
    assert second["repo"] == os.path.realpath(repo)
    assert second["workspace"] in run_git("worktree", "list", cwd=repo)
    await manager.delete_session(first["id"], purge=True)
    await manager.delete_session(second["id"], purge=True)
    assert not os.path.exists(second["workspace"])
    listed = run_git("worktree", "list", "--porcelain", cwd=repo)
    assert second["workspace"] not in listed and first["workspace"] not in listed
    # A submodule's `.git` is a file too, but it is a repository of its own.
    sub = make_repo("sub")
    os.rename(os.path.join(sub, ".git"), os.path.join(repo, ".git", "sub-modules-dir"))
    with open(os.path.join(sub, ".git"), "w") as fh:
        fh.write(f"gitdir: {os.path.join(repo, '.git', 'sub-modules-dir')}\n")
    third = await manager.create_session({"kind": "worktree", "repo": sub})
    assert third["repo"] == os.path.realpath(sub)
    assert third["workspace"] in run_git("worktree", "list", cwd=sub)


async def test_repo_outside_the_allowed_roots_is_refused(make_manager, make_repo, tmp_path):
    repo = make_repo()
    manager = make_manager(allowed_roots=[str(tmp_path / "root" / "elsewhere")])
    with pytest.raises(ForbiddenError, match="outside the allowed roots"):
        await manager.create_session({"kind": "worktree", "repo": repo})
    # A worktree inside the roots of a repository outside them: git would write there (and
    # the engine does not even read the repository's files to find out which it is).
    linked = str(tmp_path / "root" / "elsewhere" / "linked")
    run_git("worktree", "add", "-q", "-b", "linked", linked, cwd=repo)
    with pytest.raises(ForbiddenError, match=re.escape(f"the git directory of {linked} (")):
        await manager.create_session({"kind": "worktree", "repo": linked})
    assert run_git("branch", "--list", "mas/*", cwd=repo) == ""
    # A folder inside the roots whose `.git` is a symlink to the repository's, outside them:
    # it was taken, and the worktree, its branch and rescue refs were written there (QA).
    symlinked = tmp_path / "root" / "elsewhere" / "symlinked"
    symlinked.mkdir()
    (symlinked / ".git").symlink_to(os.path.join(repo, ".git"))
    with pytest.raises(ForbiddenError, match=re.escape(f"the git directory of {symlinked} (")):
        await manager.create_session({"kind": "worktree", "repo": str(symlinked)})
    assert run_git("branch", "--list", "mas/*", cwd=repo) == ""
    assert os.listdir(os.path.join(repo, ".git", "worktrees")) == ["linked"]  # the one above
    # A folder inside the roots whose repository is above them.
    inner = os.path.join(repo, "data", "elsewhere")
    os.makedirs(inner)
    await manager.shutdown()  # one engine per sessions root
    manager = make_manager(allowed_roots=[inner])
    with pytest.raises(ForbiddenError, match=re.escape(f"the repository {repo} is outside")):
        await manager.create_session({"kind": "worktree", "repo": inner})


async def test_not_a_repository(manager, root):
    (root / "plain").mkdir()
    with pytest.raises(InvalidError, match="not a git repository") as refused:
        await manager.create_session({"kind": "worktree", "repo": "plain"})
    assert refused.value.details["field"] == "repo"  # the field to change, as REST says
    with pytest.raises(InvalidError, match="not an existing directory") as refused:
        await manager.create_session({"kind": "worktree", "repo": "nowhere"})
    assert refused.value.details["field"] == "repo"


async def test_refusals_name_what_to_change(manager, make_repo, root):
    """They named no way out: an existing default branch (no 'branch'), a repository without
    commits (`base 'HEAD' is not a commit`)."""
    repo = make_repo()
    await manager.create_session({"kind": "worktree", "name": "w", "repo": repo})
    await manager.delete_session("w")  # forgotten; its branch mas/w stays
    with pytest.raises(ConflictError, match="choose another with 'branch'") as taken:
        await manager.create_session({"kind": "worktree", "name": "w", "repo": repo})
    assert taken.value.details["field"] == "branch"
    with pytest.raises(InvalidError, match="name one with 'base'") as base:
        await manager.create_session({"kind": "worktree", "repo": repo, "base": "v9"})
    assert base.value.details["field"] == "base"
    # A branch named `mas` holds the place of every `mas/<name>`: git's own words came back,
    # with no field ('cannot lock ref ...'; QA).
    repo = make_repo("with-mas")
    run_git("branch", "mas", cwd=repo)
    with pytest.raises(ConflictError, match="a branch 'mas' exists") as taken:
        await manager.create_session({"kind": "worktree", "name": "w2", "repo": repo})
    assert taken.value.details["field"] == "branch"
    run_git("branch", "data/v1", cwd=repo)
    with pytest.raises(ConflictError, match="branches under 'data/' exist"):
        await manager.create_session({"kind": "worktree", "repo": repo, "branch": "data"})
    (root / "empty").mkdir()
    run_git("init", "-q", cwd=str(root / "empty"))
    with pytest.raises(InvalidError, match="has no commits yet, .*make a first commit"):
        await manager.create_session({"kind": "worktree", "repo": str(root / "empty")})


async def test_a_bare_repository_takes_worktree_sessions(manager, make_repo, root):
    """`git clone --bare` repositories, where every checkout is a worktree, were refused as
    `not a git repository`."""
    bare = str(root / "project.git")
    run_git("clone", "-q", "--bare", make_repo(), bare, cwd=str(root))
    session = await manager.create_session({"kind": "worktree", "name": "w", "repo": bare})
    assert session["repo"] == bare
    ws = session["workspace"]
    assert os.path.isfile(os.path.join(ws, "data.csv"))
    assert "mas/w" in run_git("branch", "--list", cwd=bare)
    with open(os.path.join(ws, "more.csv"), "w") as fh:
        fh.write("3,4\n")
    ref = (await manager.delete_session("w", purge=True, force=True))["rescue_ref"]
    assert run_git("show", f"{ref}:more.csv", cwd=bare) == "3,4\n"
    assert run_git("worktree", "list", "--porcelain", cwd=bare).count("worktree ") == 1


async def test_repository_hooks_never_run(manager, make_repo, root):
    repo = make_repo()
    marker = root / "hook-ran"
    hook = os.path.join(repo, ".git", "hooks", "post-checkout")
    with open(hook, "w") as fh:
        fh.write(f"#!/bin/sh\ntouch {marker}\n")
    os.chmod(hook, stat.S_IRWXU)
    await manager.create_session({"kind": "worktree", "repo": repo})
    assert not marker.exists()


async def test_twenty_parallel_worktrees_on_one_repository(manager, make_repo):
    repo = make_repo()
    results = await asyncio.gather(
        *(manager.create_session({"kind": "worktree", "repo": repo}) for _ in range(20)),
        return_exceptions=True,
    )
    failures = [r for r in results if isinstance(r, BaseException)]
    assert failures == []
    assert len({r["branch"] for r in results}) == 20
    assert run_git("worktree", "list", cwd=repo).count("\n") == 21


async def test_stop_is_refused_with_uncommitted_changes_unless_forced(manager, make_repo):
    repo = make_repo()
    session = await manager.create_session({"kind": "worktree", "name": "w", "repo": repo})
    with open(os.path.join(session["workspace"], "new.txt"), "w") as fh:
        fh.write("work in progress")
    with open(os.path.join(session["workspace"], "données.csv"), "w") as fh:
        fh.write("a,b\n")
    check = await manager.check_stop("w")
    # Names as the user wrote them (git quoted this one as "donn\303\251es.csv").
    assert check["errors"] == [
        "the worktree has 2 uncommitted or untracked change(s) (données.csv, new.txt); "
        "commit them first"
    ]
    with pytest.raises(ConflictError) as refused:
        await manager.stop_session("w")
    assert refused.value.details["errors"] == check["errors"]
    assert manager.get_session("w")["status"] == "active"
    stopped = await manager.stop_session("w", force=True)
    assert stopped["status"] == "stopped"
    assert os.path.exists(os.path.join(session["workspace"], "new.txt"))


async def test_purging_a_dirty_worktree_needs_force_and_rescues_changes(manager, make_repo):
    repo = make_repo()
    session = await manager.create_session({"kind": "worktree", "name": "w", "repo": repo})
    ws = session["workspace"]
    with open(os.path.join(ws, "result.txt"), "w") as fh:
        fh.write("precious")
    with pytest.raises(ConflictError, match="uncommitted or untracked"):
        await manager.delete_session("w", purge=True)
    assert os.path.isdir(ws) and manager.get_session("w")
    done = await manager.delete_session("w", purge=True, force=True)
    assert not os.path.exists(ws)
    ref = done["rescue_ref"]
    assert ref.startswith("refs/mas/rescue/w-")
    assert run_git("show", f"{ref}:result.txt", cwd=repo) == "precious"
    assert f"{ws}\n" not in run_git("worktree", "list", cwd=repo)
    assert "mas/w" in run_git("branch", "--list", cwd=repo)  # the branch is kept


@pytest.mark.parametrize("how", ["orphan", "branch deleted"])
async def test_a_worktree_with_no_commit_at_head_is_rescued(manager, make_repo, how):
    """HEAD on a branch with no commit: the rescue read HEAD's tree and named an empty
    parent, and the purge failed with 'fatal: not a valid object name' (QA)."""
    repo = make_repo()
    session = await manager.create_session({"kind": "worktree", "name": "w", "repo": repo})
    ws = session["workspace"]
    if how == "orphan":
        run_git("checkout", "-q", "--orphan", "fresh", cwd=ws)
    else:
        run_git("update-ref", "-d", "refs/heads/mas/w", cwd=ws)
    with open(os.path.join(ws, "result.txt"), "w") as fh:
        fh.write("precious")
    done = await manager.delete_session("w", purge=True, force=True)
    assert not os.path.exists(ws)
    assert run_git("show", f"{done['rescue_ref']}:result.txt", cwd=repo) == "precious"


async def test_untracked_caches_block_nothing_and_are_not_rescued(manager, make_repo):
    """JupyterLab writes `.ipynb_checkpoints/` the moment a notebook opens: in a repository
    that does not ignore it, a stop was refused for '2 uncommitted change(s)' and a forced
    purge committed the caches to the rescue ref (QA)."""
    repo = make_repo()
    session = await manager.create_session({"kind": "worktree", "name": "w", "repo": repo})
    ws = session["workspace"]
    for path in (".ipynb_checkpoints/eda-checkpoint.ipynb", "src/__pycache__/m.cpython-311.pyc",
                 "pkg.egg-info/PKG-INFO", "old.pyc"):  # fmt: skip
        os.makedirs(os.path.dirname(os.path.join(ws, path)) or ws, exist_ok=True)
        with open(os.path.join(ws, path), "w") as fh:
            fh.write("made again by a tool")
    await manager.stop_session("w")  # not refused
    done = await manager.delete_session("w", purge=True)  # no force needed
    assert done["rescue_ref"] is None and not os.path.exists(ws)
    # With work beside them, the rescue keeps the work and leaves the caches out.
    session = await manager.create_session({"kind": "worktree", "name": "w2", "repo": repo})
    ws = session["workspace"]
    os.makedirs(os.path.join(ws, ".ipynb_checkpoints"))
    for path in (".ipynb_checkpoints/eda-checkpoint.ipynb", "eda.ipynb"):
        with open(os.path.join(ws, path), "w") as fh:
            fh.write("{}")
    done = await manager.delete_session("w2", purge=True, force=True)
    files = run_git("ls-tree", "-r", "--name-only", done["rescue_ref"], cwd=repo).split()
    assert "eda.ipynb" in files and not any("checkpoint" in f for f in files), files
    # A tracked file in such a folder is the user's: its change is rescued.
    os.makedirs(os.path.join(repo, "venv"))
    with open(os.path.join(repo, "venv", "pinned.txt"), "w") as fh:
        fh.write("v1")
    run_git("add", "venv/pinned.txt", cwd=repo)
    run_git("commit", "-q", "-m", "a tracked file under venv/", cwd=repo)
    session = await manager.create_session({"kind": "worktree", "name": "w3", "repo": repo})
    with open(os.path.join(session["workspace"], "venv", "pinned.txt"), "w") as fh:
        fh.write("v2")
    done = await manager.delete_session("w3", purge=True, force=True)
    assert run_git("show", f"{done['rescue_ref']}:venv/pinned.txt", cwd=repo) == "v2"


async def test_two_rescues_of_one_name_in_the_same_second_keep_both(
    manager, make_repo, monkeypatch
):
    repo = make_repo()
    monkeypatch.setattr(time, "strftime", lambda fmt, *a: "20261125-000000")
    refs = []
    for n in (1, 2, 3):
        session = await manager.create_session(
            {"kind": "worktree", "name": "w", "repo": repo, "branch": f"b{n}"}
        )
        with open(os.path.join(session["workspace"], f"f{n}.txt"), "w") as fh:
            fh.write(f"work {n}")
        refs.append((await manager.delete_session("w", purge=True, force=True))["rescue_ref"])
    stem = "refs/mas/rescue/w-20261125-000000"
    assert refs == [stem, f"{stem}-2", f"{stem}-3"]
    for n, ref in enumerate(refs, 1):
        assert run_git("show", f"{ref}:f{n}.txt", cwd=repo) == f"work {n}"


async def test_clean_worktree_is_purged_without_force(manager, make_repo):
    repo = make_repo()
    session = await manager.create_session({"kind": "worktree", "name": "w", "repo": repo})
    result = await manager.delete_session("w", purge=True)
    assert result["rescue_ref"] is None
    assert not os.path.exists(session["workspace"])


@pytest.mark.parametrize("root_in_a_repo", [False, True])
async def test_a_worktree_git_cannot_read_is_not_clean(manager, make_repo, root, root_in_a_repo):
    """Its `.git` link removed: `git status` failed and counted as clean, so a purge without
    force deleted the user's files and a stop went through unasked. With the server root in
    a repository of its own, as a user's project often is, git answered for that one."""
    if root_in_a_repo:
        run_git("init", "-q", cwd=str(root))
    repo = make_repo()
    session = await manager.create_session({"kind": "worktree", "name": "w", "repo": repo})
    ws = session["workspace"]
    with open(os.path.join(ws, "analysis.ipynb"), "w") as fh:
        fh.write("work")
    os.remove(os.path.join(ws, ".git"))
    check = await manager.check_stop("w")
    assert check["errors"] and "cannot tell whether the worktree" in check["errors"][0]
    with pytest.raises(ConflictError, match="cannot tell whether the worktree"):
        await manager.delete_session("w", purge=True)
    assert manager.get_session("w")["status"] == "active"
    # Forced, it cannot save what it cannot read: refused before anything is stopped.
    with pytest.raises(ConflictError, match="cannot tell whether the worktree"):
        await manager.delete_session("w", purge=True, force=True)
    assert os.path.exists(os.path.join(ws, "analysis.ipynb"))
    assert manager.get_session("w")["status"] == "active"
    # Deleting it without purge forgets it and keeps the folder.
    await manager.delete_session("w")
    assert os.path.exists(os.path.join(ws, "analysis.ipynb"))


async def test_a_purge_left_unfinished_that_fails_does_not_stop_recovery(
    make_manager, make_repo, root
):
    """A purge interrupted (a crash) whose worktree cannot be read at the next start: the
    start's recovery raised at it, every time, and skipped everything after it (tmux workers
    were not re-attached). Now that session comes back stopped, and the rest goes on."""
    repo = make_repo()
    manager = make_manager()
    broken = await manager.create_session({"kind": "worktree", "name": "broken", "repo": repo})
    await manager.create_session({"kind": "quick", "name": "gone"})
    os.remove(os.path.join(broken["workspace"], ".git"))
    for name in ("broken", "gone"):  # as a crash mid-purge leaves them
        manager.store.update_session(manager.get_session(name)["id"], row_state="purging")
    await manager.shutdown()
    again = make_manager()
    report = await again.recover()
    assert (report["deleted"], report["kept"]) == (1, 1)
    assert [s["name"] for s in again.list_sessions()] == ["broken"]
    assert again.get_session("broken")["status"] == "stopped"
    assert os.path.isdir(broken["workspace"])


async def test_the_rescue_of_a_purge_finished_at_start_is_reported(
    make_manager, make_repo, caplog, root
):
    """A forced purge that a crash interrupted is finished by the next start, which saved the
    changes on a rescue ref and said so nowhere: the session is gone, so the log must."""
    repo = make_repo()
    manager = make_manager()
    ws = (await manager.create_session({"kind": "worktree", "name": "w", "repo": repo}))[
        "workspace"
    ]
    with open(os.path.join(ws, "notes.md"), "w") as fh:
        fh.write("findings")
    manager.store.update_session(manager.get_session("w")["id"], row_state="purging-forced")
    await manager.shutdown()
    leftover = root / "mas-sessions" / ".mas" / "rescue-index-k9x"  # a rescue's, cut short
    leftover.mkdir()
    (leftover / "index").write_bytes(b"DIRC")
    report = await make_manager().recover()
    assert not leftover.exists()
    [ref] = report["rescued"]
    assert run_git("show", f"{ref}:notes.md", cwd=repo) == "findings"
    assert f"changes are on {ref} in {repo}" in caplog.text


async def test_a_create_whose_worker_fails_takes_its_branch_back(make_manager, make_repo):
    """The session is undone when its agent cannot start; its branch stayed, so a retry with
    the same name met `branch 'mas/s' already exists`."""
    manager = make_manager(backends={"bot": {"argv": ["cat"], "instructions_file": "BOT.md"}})
    repo = make_repo()
    os.makedirs(os.path.join(repo, "BOT.md"))  # the persona's file cannot be written
    with open(os.path.join(repo, "BOT.md", "notes.txt"), "w") as fh:
        fh.write("a folder")
    run_git("add", "BOT.md", cwd=repo)
    run_git("commit", "-q", "-m", "BOT.md is a folder", cwd=repo)
    branches = run_git("branch", "--list", cwd=repo)
    worker = {"backend": "bot", "persona": "pm"}
    spec = {"kind": "worktree", "repo": repo, "name": "s", "workers": [worker]}
    with pytest.raises(ConflictError, match="BOT.md .*directory"):
        await manager.create_session(spec)
    assert run_git("branch", "--list", cwd=repo) == branches
    assert manager.store.count_sessions() == 0


async def test_a_worktree_whose_repository_moved_is_kept_and_git_is_not_blamed(
    manager, make_repo, tmp_path
):
    """Before: a purge answered `git is not installed` (a missing folder to run git in read
    as a missing git), and a forced one hid the session for good; now both are refused and
    nothing is stopped."""
    repo = make_repo()
    ws = (await manager.create_session({"kind": "worktree", "name": "w", "repo": repo}))[
        "workspace"
    ]
    os.rename(repo, tmp_path / "moved")
    for force in (False, True):
        with pytest.raises(ConflictError) as refused:
            await manager.delete_session("w", purge=True, force=force)
        assert "cannot tell whether the worktree" in str(refused.value)
        assert "not installed" not in str(refused.value)
    assert os.path.isdir(ws) and manager.get_session("w")["status"] == "active"
    missing = await git("status", cwd=str(tmp_path / "nowhere"))
    assert not missing.ok and "does not exist" in missing.err


async def test_commits_on_a_detached_head_are_not_lost_by_a_purge(manager, make_repo):
    """They counted as clean: a purge without force removed the worktree and left them on no
    ref, for `git gc` to delete."""
    repo = make_repo()
    ws = (await manager.create_session({"kind": "worktree", "name": "w", "repo": repo}))[
        "workspace"
    ]
    run_git("checkout", "-q", "--detach", cwd=ws)
    with open(os.path.join(ws, "model.py"), "w") as fh:
        fh.write("fit()\n")
    run_git("add", "model.py", cwd=ws)
    run_git("commit", "-q", "-m", "the model", cwd=ws)
    commit = run_git("rev-parse", "HEAD", cwd=ws).strip()
    with pytest.raises(ConflictError, match="uncommitted") as refused:
        await manager.delete_session("w", purge=True)
    assert refused.value.details["changes"] == [f"## HEAD {commit[:12]} (detached) is on no branch"]
    ref = (await manager.delete_session("w", purge=True, force=True))["rescue_ref"]
    assert run_git("show", f"{ref}:model.py", cwd=repo) == "fit()\n"
    assert commit in run_git("rev-list", ref, cwd=repo)


BOT = {"bot": {"argv": ["cat"], "instructions_file": "BOT.md"}}
# The first line of a section as versions before sections named their worker wrote it.
LEGACY_START = "<!-- mas_jupyter persona: start (managed by mas_jupyter; edits are replaced) -->"


def _repo_with_rules(make_repo, committed: bytes | None) -> str:
    """A repository whose last commit holds BOT.md with these bytes (None: no BOT.md)."""
    repo = make_repo()
    if committed is not None:
        with open(os.path.join(repo, "BOT.md"), "wb") as fh:
            fh.write(committed)
        run_git("add", "BOT.md", cwd=repo)
        run_git("commit", "-q", "-m", "rules", cwd=repo)
    return repo


SECTION_OF_ANOTHER_SESSION = (
    f"# Our rules\n\n{LEGACY_START}\nYou work in session old.\n{PERSONA_END}\n".encode()
)


@pytest.mark.parametrize(
    "committed",
    [
        b"# Our rules\nTabs, never spaces.\n",
        None,  # no such file: the persona makes it
        b"Rules\r\nline two\r\n",  # Windows line ends were rewritten as \n
        b"R\xe8gles caf\xe9\n",  # not UTF-8
        SECTION_OF_ANOTHER_SESSION,  # an agent committed the file with its section
    ],
)
async def test_the_persona_section_is_not_work_to_save(make_manager, make_repo, committed):
    """A worker with a persona wrote its section into the instructions file, which made every
    new worktree dirty: stop and purge asked for force, for text the engine itself wrote."""
    manager = make_manager(backends=BOT)
    repo = _repo_with_rules(make_repo, committed)
    spec = {
        "kind": "worktree",
        "repo": repo,
        "name": "w",
        "workers": [{"backend": "bot", "persona": "qa"}],
    }
    ws = (await manager.create_session(spec))["workspace"]
    path = os.path.join(ws, "BOT.md")
    with open(path, "rb") as fh:
        written = fh.read()
    assert b"Your role: quality assurance" in written
    if committed is not None and committed != SECTION_OF_ANOTHER_SESSION:
        assert written.startswith(committed)  # the user's bytes, line ends included
    assert (await manager.check_stop("w"))["errors"] == []
    # The user's (or the agent's) own edit of that file is work, as any other.
    with open(path, "ab") as fh:
        fh.write(b"\nAlso: type hints.\n")
    refused = (await manager.check_stop("w"))["errors"]
    assert refused == [
        "the worktree has 1 uncommitted or untracked change(s) (BOT.md); commit them first"
    ]
    with pytest.raises(ConflictError) as purge:
        await manager.delete_session("w", purge=True)
    assert purge.value.details["changes"] == [("?? BOT.md" if committed is None else " M BOT.md")]
    with open(path, "wb") as fh:
        fh.write(written)
    assert (await manager.delete_session("w", purge=True))["rescue_ref"] is None
    assert not os.path.exists(ws)


@pytest.mark.parametrize(
    "committed",
    [b"# Our rules\nTabs, never spaces.", None, b"Rules\r\nline two\r\n", b"R\xe8gles\n"],
)
async def test_a_kept_worktree_is_left_without_the_persona(make_manager, make_repo, committed):
    """Deleting the worker, or the session without purge, left the section in the worktree:
    a change in `git status` that the user had not made, and instructions that went on
    steering the next agent started there."""
    manager = make_manager(backends=BOT)
    repo = _repo_with_rules(make_repo, committed)
    bot = {"name": "bot", "backend": "bot", "persona": "qa"}
    ws = (await manager.create_session({"kind": "worktree", "repo": repo, "name": "w"}))[
        "workspace"
    ]
    path = os.path.join(ws, "BOT.md")
    for delete in ("worker", "session"):
        await manager.create_worker("w", bot)
        assert run_git("status", "--porcelain", cwd=ws) != ""
        if delete == "worker":
            await manager.delete_worker("w", "bot")
        else:
            await manager.delete_session("w")
        assert run_git("status", "--porcelain", cwd=ws) == ""
        if committed is None:
            assert not os.path.exists(path)
        else:
            with open(path, "rb") as fh:
                assert fh.read() == committed


async def test_a_persona_file_git_ignores_is_not_ignored_work(make_manager, make_repo):
    """With the instructions file in the user's global excludes (CLAUDE.md often is), the
    purge refused it as ignored work, though it held only the engine's section."""
    manager = make_manager(backends=BOT)
    repo = make_repo()
    with open(os.path.join(repo, ".git", "info", "exclude"), "a") as fh:
        fh.write("BOT.md\n")
    spec = {"kind": "worktree", "repo": repo, "name": "w"}
    ws = (await manager.create_session({**spec, "workers": [{"backend": "bot", "persona": "qa"}]}))[
        "workspace"
    ]
    assert os.path.exists(os.path.join(ws, "BOT.md"))
    assert (await manager.delete_session("w", purge=True))["rescue_ref"] is None


async def test_a_locked_worktree_is_not_purged(manager, make_repo):
    """The user's `git worktree lock` was ignored: the folder was deleted and the locked entry
    kept, so the branch could be neither checked out nor deleted."""
    repo = make_repo()
    ws = (await manager.create_session({"kind": "worktree", "name": "w", "repo": repo}))[
        "workspace"
    ]
    run_git("worktree", "lock", "--reason", "keep me", ws, cwd=repo)
    with pytest.raises(ConflictError, match="is locked .*worktree unlock"):
        await manager.delete_session("w", purge=True, force=True)
    assert os.path.isdir(ws) and manager.get_session("w")["status"] == "active"
    run_git("worktree", "unlock", ws, cwd=repo)
    await manager.delete_session("w", purge=True)
    assert "mas/w" in run_git("branch", "--list", cwd=repo)
    run_git("branch", "-D", "mas/w", cwd=repo)  # checked out nowhere any more


async def test_repositories_inside_a_worktree_are_not_purged_with_their_work(
    manager, make_repo, tmp_path
):
    """A forced purge kept only a gitlink in the rescue ref: the commits of a repository made
    inside the worktree, and a submodule's edits (its git folder is under the worktree's
    own), were deleted. So was a submodule commit the agent had committed the bump of (its
    pointer was clean), and a repository in a folder git ignores or whose name git quotes."""
    upstream = make_repo("lib")
    repo = make_repo()
    with open(os.path.join(repo, ".gitignore"), "w") as fh:
        fh.write("data/\n")
    allow = ("-c", "protocol.file.allow=always")
    run_git(*allow, "submodule", "add", "-q", upstream, "lib", cwd=repo)
    run_git("add", ".gitignore", cwd=repo)
    run_git("commit", "-q", "-m", "lib as a submodule", cwd=repo)
    ws = (await manager.create_session({"kind": "worktree", "name": "w", "repo": repo}))[
        "workspace"
    ]
    run_git(*allow, "submodule", "update", "-q", "--init", cwd=ws)
    # An untouched submodule, and a clone whose commits are on its remote, are no work.
    run_git("clone", "-q", upstream, os.path.join(ws, "data", "mirror"), cwd=ws)
    assert (await manager.check_stop("w"))["errors"] == []
    await manager.workspaces.require_purgeable(manager.store.get_session("w"), force=True)

    def commit_in(folder, name):
        os.makedirs(folder, exist_ok=True)
        if not os.path.exists(os.path.join(folder, ".git")):
            run_git("init", "-q", cwd=folder)
        with open(os.path.join(folder, name), "w") as fh:
            fh.write("work\n")
        run_git("add", name, cwd=folder)
        run_git("commit", "-q", "-m", name, cwd=folder)

    commit_in(os.path.join(ws, "données"), "grid.py")  # a name git quotes
    commit_in(os.path.join(ws, "data", "exp1"), "run.py")  # in an ignored folder
    commit_in(os.path.join(ws, "lib"), "patch.py")
    run_git("commit", "-q", "-am", "bump lib", cwd=ws)  # the pointer is committed: clean
    with open(os.path.join(ws, "lib", "draft.py"), "w") as fh:
        fh.write("draft\n")
    expected = [
        "lib (commits on no remote branch and uncommitted changes)",
        "données/ (commits on no remote branch)",
        "data/exp1/ (commits on no remote branch)",
    ]
    for force in (False, True):
        with pytest.raises(ConflictError, match="push or commit their work") as refused:
            await manager.delete_session("w", purge=True, force=force)
        assert sorted(refused.value.details["changes"]) == sorted(expected)
    assert manager.get_session("w")["status"] == "active"  # refused before anything stopped
    assert os.path.exists(os.path.join(ws, "lib", "draft.py"))
    # Moved out, the rest is purged as usual.
    for folder in ("données", "data/exp1", "lib"):
        os.rename(os.path.join(ws, folder), tmp_path / os.path.basename(folder))
    ref = (await manager.delete_session("w", purge=True, force=True))["rescue_ref"]
    assert ref and not os.path.exists(ws)
    assert run_git("log", "-1", "--format=%s", cwd=str(tmp_path / "exp1")).strip() == "run.py"


async def test_ignored_work_is_not_purged_without_force(manager, make_repo):
    """Ignored files (`data/`, `*.pkl`) were deleted by a purge without a word, and a forced
    one did not save them either. Caches that tools make again do not count."""
    repo = make_repo()
    with open(os.path.join(repo, ".gitignore"), "w") as fh:
        fh.write("data/\n*.pkl\n__pycache__/\n.ipynb_checkpoints/\n")
    run_git("add", ".gitignore", cwd=repo)
    run_git("commit", "-q", "-m", "ignore", cwd=repo)
    ws = (await manager.create_session({"kind": "worktree", "name": "w", "repo": repo}))[
        "workspace"
    ]
    for path in ("src/__pycache__/fit.cpython-311.pyc", ".ipynb_checkpoints/a-checkpoint.ipynb"):
        os.makedirs(os.path.dirname(os.path.join(ws, path)), exist_ok=True)
        with open(os.path.join(ws, path), "w") as fh:
            fh.write("cache")
    assert await manager.workspaces.require_clean(manager.store.get_session("w")) == []
    os.makedirs(os.path.join(ws, "data"))
    with open(os.path.join(ws, "data", "train.csv"), "w") as fh:
        fh.write("x,y\n")
    with open(os.path.join(ws, "model.pkl"), "w") as fh:
        fh.write("weights")
    assert (await manager.check_stop("w"))["errors"] == []  # a stop keeps them
    with pytest.raises(ConflictError, match="2 ignored file.*data/, model.pkl") as refused:
        await manager.delete_session("w", purge=True)
    assert refused.value.details["changes"] == ["!! data/", "!! model.pkl"]
    with open(os.path.join(ws, "notes.md"), "w") as fh:
        fh.write("also an untracked file")
    with pytest.raises(ConflictError, match="1 uncommitted .* and 2 ignored") as refused:
        await manager.delete_session("w", purge=True)
    assert refused.value.details["changes"] == ["?? notes.md", "!! data/", "!! model.pkl"]
    assert os.path.exists(os.path.join(ws, "model.pkl"))
    ref = (await manager.delete_session("w", purge=True, force=True))["rescue_ref"]
    assert run_git("show", f"{ref}:notes.md", cwd=repo) == "also an untracked file"
    assert not os.path.exists(ws)


async def test_a_worktree_folder_replaced_by_a_link_is_not_purged_through_it(
    manager, make_repo, tmp_path
):
    """The purge went through the link: git was asked to remove the worktree it names."""
    repo = make_repo()
    a = await manager.create_session({"kind": "worktree", "name": "a", "repo": repo})
    b = await manager.create_session({"kind": "worktree", "name": "b", "repo": repo})
    os.rename(a["workspace"], tmp_path / "a-moved")
    os.symlink(b["workspace"], a["workspace"])
    for force in (False, True):
        with pytest.raises(ConflictError, match="is now a symbolic link"):
            await manager.delete_session("a", purge=True, force=force)
    os.remove(a["workspace"])
    await manager.delete_session("a", purge=True)
    assert os.path.isfile(os.path.join(b["workspace"], "data.csv"))
    listed = run_git("worktree", "list", "--porcelain", cwd=repo)
    assert f"worktree {b['workspace']}\n" in listed and manager.get_session("b")
