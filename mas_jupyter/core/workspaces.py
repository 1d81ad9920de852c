"""Session workspaces: quick directories from templates, git worktrees, and shared directories.

Every workspace carries `.mas/session.json` (for `dir` sessions, which are not ours to
structure, the file lives in `<sessions_root>/.mas/dir-sessions/`), so that the store can be
rebuilt by scanning them. `.mas/` holds a `.gitignore` of `*`, so it never shows up as a change
in a worktree.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence

from . import processes, validate
from .errors import ConflictError, ForbiddenError, InvalidError, UnavailableError
from .gitrun import git
from .models import Session
from .personas import (
    PERSONA_FILE_MAX,
    read_text,
    remove_instructions,
    section_owner,
    without_section,
)

META_DIR = ".mas"
META_FILE = "session.json"
# Ignored folders and files that tools make again: a purge deletes them without asking.
DISPOSABLE = frozenset(
    {
        "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis",
        ".ipynb_checkpoints", ".tox", ".nox", ".venv", "venv", "node_modules", ".DS_Store",
    }
)  # fmt: skip
DISPOSABLE_SUFFIXES = (".pyc", ".pyo", ".egg-info")
RESCUE_INDEX_PREFIX = "rescue-index-"  # a rescue's temporary git index, in the state folder
# The same as git pathspecs, left out of a rescue commit.
_NOT_RESCUED = [
    f":(exclude,glob)**/{pattern}{inside}"
    for pattern in [*sorted(DISPOSABLE), *(f"*{suffix}" for suffix in DISPOSABLE_SUFFIXES)]
    for inside in ("", "/**")
]


def _disposable(path: str) -> bool:
    """Whether a path is a cache that tools make again (`__pycache__/x.pyc`, a notebook's
    `.ipynb_checkpoints/`), which no stop or purge waits for and no rescue keeps."""
    parts = path.rstrip("/").split("/")
    return not DISPOSABLE.isdisjoint(parts) or any(p.endswith(DISPOSABLE_SUFFIXES) for p in parts)


def _in_worktree(session: Session) -> dict[str, str]:
    """git's environment for a command about a worktree workspace: git does not look above
    it, so a workspace whose `.git` link is gone is no repository, never the one around it
    (a server root inside the user's own repository)."""
    return _only_in(session.workspace)


def _only_in(folder: str) -> dict[str, str]:
    """git's environment for a command about the repository at `folder` and no other."""
    return {"GIT_CEILING_DIRECTORIES": os.path.dirname(os.path.abspath(folder))}


def _linked_git_dir(top: str) -> str | None:
    """The git directory a `.git` file names (a linked worktree's or a submodule's), else None."""
    dotgit = os.path.join(top, ".git")
    if not os.path.isfile(dotgit):
        return None
    try:
        with open(dotgit, encoding="utf-8") as fh:
            text = fh.read(4096).strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not text.startswith("gitdir:"):
        return None  # git will say what is wrong with it
    return os.path.realpath(os.path.join(top, text[len("gitdir:") :].strip()))


def _is_bare(folder: str) -> bool:
    """Whether a folder is a bare repository (`git clone --bare`): a git directory of its own,
    as git recognises one, with no working tree around it."""
    return (
        os.path.isfile(os.path.join(folder, "HEAD"))
        and os.path.isdir(os.path.join(folder, "objects"))
        and os.path.isdir(os.path.join(folder, "refs"))
    )


def _main_worktree(top: str, git_dir: str) -> str:
    """The repository a linked worktree belongs to, `top` itself for a submodule.

    A linked worktree's git directory is `<repo>/.git/worktrees/<name>`, whose `commondir`
    names the repository's git directory; a submodule's has no `commondir`.
    """
    try:
        with open(os.path.join(git_dir, "commondir"), encoding="utf-8") as fh:
            common = os.path.realpath(os.path.join(git_dir, fh.read(4096).strip()))
    except (OSError, UnicodeDecodeError):
        return top
    return os.path.dirname(common) if os.path.basename(common) == ".git" else common


class Workspaces:
    """Creates, inspects and removes the directories sessions work in."""

    def __init__(self, sessions_root: str, allowed_roots: list[str], browse_root: str) -> None:
        self.root = os.path.realpath(sessions_root)
        self.browse_root = os.path.realpath(browse_root)
        self.allowed_roots = [os.path.realpath(r) for r in allowed_roots]
        self.state_dir = os.path.join(self.root, META_DIR)
        self.staging_dir = os.path.join(self.state_dir, "staging")
        self.dir_sessions = os.path.join(self.state_dir, "dir-sessions")
        self._repo_locks: dict[str, asyncio.Lock] = {}
        self._template_sizes: dict[str, tuple[dict[str, int], list[str]]] = {}

    def ensure_root(self) -> None:
        """Create the sessions root and its state folders; fail clearly if not writable."""
        for path in (self.root, self.state_dir, self.staging_dir, self.dir_sessions):
            os.makedirs(path, exist_ok=True)
        _write_ignore(self.state_dir)
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise PermissionError(f"the sessions root {self.root} is not writable")

    # paths

    def plan_path(self, name: str, session_id: str) -> str:
        """A new workspace directory under the root: the session name, or name-<id> if taken."""
        path = os.path.join(self.root, name)
        if os.path.lexists(path):
            path = os.path.join(self.root, f"{name}-{session_id[:8]}")
        if os.path.lexists(path):
            raise ConflictError(f"the workspace directory {path} already exists")
        return path

    def browser_path(self, workspace: str) -> str | None:
        """A workspace's path relative to the server's root (for the file browser), or None."""
        return _browser_path(workspace, self.browse_root)

    def owns(self, path: str) -> bool:
        """Whether path is a workspace directory this engine made (directly under the root)."""
        real = os.path.realpath(path)
        return os.path.dirname(real) == self.root and os.path.basename(real) != META_DIR

    def in_place(self, session: Session) -> bool:
        """Whether the workspace still resolves where the engine put it: directly under the
        root (quick, worktree), inside the allowed roots (dir). One that a link replaced (a
        worker can do that) is not written to or read from: it leads elsewhere."""
        if session.kind == "dir":
            real = os.path.realpath(session.workspace)
            return any(validate.inside(real, r) for r in self.allowed_roots)
        return self.owns(session.workspace)

    def require_in_place(self, session: Session) -> None:
        """Refuse (403) to start, read or write anything through a workspace a link replaced."""
        if not self.in_place(session):
            raise ForbiddenError(
                f"the workspace {session.workspace} now leads to "
                f"{os.path.realpath(session.workspace)}, outside the folders this server may "
                "use: a link replaced it; nothing is started, read or written there until "
                "the folder is back"
            )

    def transcripts(self, session: Session) -> str:
        """The folder of a session's worker transcripts: `.mas/transcripts` in the workspace,
        or for a `dir` session (a folder of the user's) in the engine's state folder."""
        self.require_in_place(session)
        if session.kind == "dir":
            return os.path.join(self.dir_sessions, session.id, "transcripts")
        return os.path.join(session.workspace, META_DIR, "transcripts")

    def resolve_dir(self, path: object) -> str:
        """An existing directory inside the allowed roots, for a `dir` session."""
        real = validate.contained_path(path, self.allowed_roots, "path")
        if not os.path.isdir(real):
            raise InvalidError(f"path {path!r} is not an existing directory", field="path")
        if validate.inside(real, self.state_dir):  # the database, transcripts, tmux socket
            raise ForbiddenError(
                f"path {path!r} is in the engine's own state folder {self.state_dir}; "
                "choose a folder of yours with 'path'",
                field="path",
            )
        return real

    # quick

    def is_small(self, template_dir: str, files: int = 32, size: int = 256 * 1024) -> bool:
        """Whether a template has at most `files` files and `size` bytes. A small template's
        folders and files are remembered: checking again costs a stat of each, and a file
        overwritten in place (a folder's time does not change then) is seen too."""
        cached = self._template_sizes.get(template_dir)
        try:
            if cached is not None:
                folders, names = cached
                if all(os.stat(f).st_mtime_ns == stamp for f, stamp in folders.items()):
                    return sum(os.lstat(n).st_size for n in names) <= size
            folders, names = {}, []
            for folder, _dirs, fnames in os.walk(template_dir):
                folders[folder] = os.stat(folder).st_mtime_ns
                names += (os.path.join(folder, n) for n in fnames)
                if len(names) > files:
                    break
            small = len(names) <= files and sum(os.lstat(n).st_size for n in names) <= size
        except OSError:  # changed meanwhile: copy it in a thread
            small = False
        if small:
            self._template_sizes[template_dir] = (folders, names)
        else:
            self._template_sizes.pop(template_dir, None)
        return small

    def create_quick(self, session: Session, template_dir: str) -> None:
        """Fill a new directory from a template, then move it into place in one rename."""
        staging = os.path.join(self.staging_dir, session.id)
        try:
            _copy_template(template_dir, staging)
        except OSError as e:
            where = e.filename or template_dir
            raise UnavailableError(
                f"cannot copy the template {os.path.basename(template_dir)!r}: {where}: "
                f"{e.strerror or e}; make its files readable"
            ) from None
        self.write_metadata(session, new_workspace=staging)
        os.rename(staging, session.workspace)

    # worktree

    def _lock(self, repo: str) -> asyncio.Lock:
        return self._repo_locks.setdefault(repo, asyncio.Lock())

    def resolve_repo(self, repo: object) -> str:
        """The top level of the git repository holding `repo`, inside the allowed roots.

        Found as git finds it, by the nearest `.git` (folder or file) upwards, without running
        git: what git itself then refuses (a broken `.git`, a repository owned by someone
        else) fails `git worktree add`, before anything is created. A linked worktree (another
        session's, say) names the repository it belongs to, which outlives it.
        """
        path = validate.contained_path(repo, self.allowed_roots, "repo")
        if not os.path.isdir(path):
            raise InvalidError(f"repo {repo!r} is not an existing directory", field="repo")
        top = path
        while not os.path.lexists(os.path.join(top, ".git")):
            if _is_bare(top):  # `git worktree add` works from a bare repository too
                self._require_inside_roots(top, f"the repository {top}")
                return top
            parent = os.path.dirname(top)
            if parent == top:
                raise InvalidError(f"repo {repo!r} is not a git repository", field="repo")
            top = parent
        # Each path is checked before anything in it is read: the `.git` found may be above
        # the roots, and a linked worktree's git directory and repository anywhere.
        self._require_inside_roots(top, f"the repository {top}")
        # A `.git` that is a symlink is followed by git: where it leads is checked too.
        dotgit = os.path.realpath(os.path.join(top, ".git"))
        self._require_inside_roots(dotgit, f"the git directory of {top} ({dotgit})")
        git_dir = _linked_git_dir(top)
        if git_dir is not None:
            self._require_inside_roots(git_dir, f"the git directory of {top} ({git_dir})")
            top = _main_worktree(top, git_dir)
            self._require_inside_roots(top, f"the repository {top}")
        return top

    def _require_inside_roots(self, path: str, what: str) -> None:
        if not any(validate.inside(path, r) for r in self.allowed_roots):
            raise validate.ForbiddenError(
                f"{what} is outside the allowed roots; "
                "add the repository to MASManager.allowed_roots to use it"
            )

    async def create_worktree(self, session: Session) -> None:
        """`git worktree add` on a new branch from the session's base, serialized per
        repository. git checks everything before it creates anything: a base that is not a
        commit, a branch that exists, a folder that is not a repository."""
        assert session.repo and session.branch and session.base
        async with self._lock(session.repo):
            res = await git(
                "worktree",
                "add",
                "--quiet",
                "-b",
                session.branch,
                "--end-of-options",
                session.workspace,
                f"{session.base}^{{commit}}",
                cwd=session.repo,
            )
            if not res.ok:
                await self._worktree_refused(session, res.err.strip())
        self.write_metadata(session, new_workspace=session.workspace)

    async def _worktree_refused(self, session: Session, err: str) -> None:
        # Only on failure: ask git what was wrong, in words the user can act on.
        repo, branch = session.repo or "", session.branch or ""
        if not (await git("rev-parse", "--git-dir", cwd=repo)).ok:
            raise InvalidError(f"repo {repo!r} is not a git repository ({err})", field="repo")
        rev = ("--verify", "--quiet", "--end-of-options", f"{session.base}^{{commit}}")
        if not (await git("rev-parse", *rev, cwd=repo)).ok:
            if not (await git("rev-parse", "--verify", "--quiet", "HEAD", cwd=repo)).ok:
                if not (await git("for-each-ref", "--count=1", cwd=repo)).out.strip():
                    raise InvalidError(
                        f"the repository {repo} has no commits yet, and a worktree starts "
                        "from one: make a first commit there, then create the session",
                        field="repo",
                    )
            raise InvalidError(
                f"base {session.base!r} is not a commit in {repo}; name one with 'base'",
                field="base",
            )
        if (await git("show-ref", "--verify", "--quiet", f"refs/heads/{branch}", cwd=repo)).ok:
            raise ConflictError(
                f"branch {branch!r} already exists in {repo}; choose another with 'branch'",
                field="branch",
            )
        # `mas/x` cannot be made while a branch `mas` exists, nor `a` while `a/b` does.
        parts = branch.split("/")
        for n in range(1, len(parts)):
            clash = "/".join(parts[:n])
            ref = f"refs/heads/{clash}"
            if (await git("show-ref", "--verify", "--quiet", ref, cwd=repo)).ok:
                raise ConflictError(
                    f"branch {branch!r} cannot be made in {repo}: a branch {clash!r} exists, "
                    "and git cannot hold both; choose another with 'branch'",
                    field="branch",
                )
        below = await git("for-each-ref", "--count=1", f"refs/heads/{branch}/", cwd=repo)
        if below.ok and below.out.strip():
            raise ConflictError(
                f"branch {branch!r} cannot be made in {repo}: branches under {branch + '/'!r} "
                "exist, and git cannot hold both; choose another with 'branch'",
                field="branch",
            )
        raise ConflictError(f"git worktree add failed: {err.strip()}")

    async def changes(self, session: Session) -> list[str]:
        """Uncommitted and untracked changes in a worktree workspace (porcelain lines).

        A worktree whose state git cannot tell (its `.git` link removed, its repository moved)
        is not clean: a conflict says so, and nothing that would lose its files goes on."""
        if session.kind != "worktree" or not os.path.isdir(session.workspace):
            return []
        res = await git(  # names as they are: `données.csv`, not `"donn\303\251es.csv"`
            "-c", "core.quotePath=false", "status", "--porcelain", "--untracked-files=all",
            cwd=session.workspace, env=_in_worktree(session),
        )  # fmt: skip
        if not res.ok:
            why = res.err.strip().splitlines()[-1] if res.err.strip() else f"status {res.code}"
            raise ConflictError(
                f"cannot tell whether the worktree {session.workspace} has uncommitted "
                f"changes ({why}); it is kept as it is"
            )
        lines = [line for line in res.out.splitlines() if line.strip()]
        # Untracked caches (JupyterLab's `.ipynb_checkpoints/` the moment a notebook opens,
        # `__pycache__/`) are no work to save, ignored by the repository or not.
        lines = [ln for ln in lines if not (ln.startswith("?? ") and _disposable(ln[3:]))]
        lines = [line for line in lines if not await self._persona_only(session, line)]
        return lines + await self._unreferenced_head(session)

    async def _persona_only(self, session: Session, line: str) -> bool:
        """Whether a changed file at the workspace's top differs from its committed version
        (none, when untracked) only by the persona section the engine wrote into it: that
        section is the engine's, not work to save, so a new worktree with a persona is clean.
        A committed section (an agent committed the file) is not the user's text either."""
        code, path = line[:2], line[3:]
        if code not in (" M", "??") or "/" in path or path.startswith('"'):
            return False
        # Decoded as git's output is, so that bytes that are not UTF-8 compare equal.
        ours = _without_persona(os.path.join(session.workspace, path), errors="replace")
        if ours is None:
            return False
        committed = ""
        if code == " M":
            env = _in_worktree(session)
            blob = await git("cat-file", "blob", f"HEAD:{path}", cwd=session.workspace, env=env)
            if not blob.ok:
                return False
            stripped = without_section(blob.out)
            committed = blob.out if stripped is None else stripped
        return ours.rstrip("\r\n") == committed.rstrip("\r\n")

    async def _unreferenced_head(self, session: Session) -> list[str]:
        """Commits made on a detached HEAD that no branch or tag holds: removing the worktree
        would leave them to `git gc`. One line saying so (a rescue's parent keeps them)."""
        env, ws = _in_worktree(session), session.workspace
        if (await git("symbolic-ref", "-q", "HEAD", cwd=ws, env=env)).ok:
            return []  # on a branch
        head = await git("rev-parse", "--verify", "HEAD", cwd=ws, env=env)
        if not head.ok:
            return []
        sha = head.out.strip()
        held = await git("for-each-ref", "--count=1", "--contains", sha, cwd=ws, env=env)
        if not held.ok or held.out.strip():
            return []
        return [f"## HEAD {sha[:12]} (detached) is on no branch"]

    async def rescue(self, session: Session) -> str | None:
        """Save a worktree's uncommitted changes as a commit on refs/mas/rescue/<name>-<time>."""
        if not await self.changes(session):
            return None
        ws, where = session.workspace, _in_worktree(session)  # every call: this worktree's
        with tempfile.TemporaryDirectory(dir=self.state_dir, prefix=RESCUE_INDEX_PREFIX) as tmp:
            env = {"GIT_INDEX_FILE": os.path.join(tmp, "index"), **where}
            head = await git("rev-parse", "--verify", "--quiet", "HEAD", cwd=ws, env=where)
            # HEAD on a branch with no commit (`git checkout --orphan`, or its branch deleted
            # under it): the rescue is a commit of its own, with no parent.
            parent = ["-p", head.out.strip()] if head.ok else []
            if head.ok:
                await git("read-tree", "HEAD", cwd=ws, env=env)
            add = await git("add", "--all", "--", ".", *_NOT_RESCUED, cwd=ws, env=env)
            if add.ok:  # changes to tracked files are kept wherever they are, caches or not
                add = await git("add", "--update", "--", ".", cwd=ws, env=env)
            tree = await git("write-tree", cwd=ws, env=env)
            if not (add.ok and tree.ok):
                why = (add.err or tree.err).strip()
                raise ConflictError(f"could not save the changes in {ws}: {why}")
            commit = await git(
                "commit-tree",
                tree.out.strip(),
                *parent,
                "-m",
                f"mas_jupyter: rescued changes of session {session.name}",
                cwd=ws,
                env=where,
            )
        if not commit.ok:
            raise ConflictError(f"could not save the changes in {ws}: {commit.err.strip()}")
        stem = f"refs/mas/rescue/{session.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        for n in range(1, 101):
            ref = stem if n == 1 else f"{stem}-{n}"
            # The empty old value: created only if it does not exist (another session of that
            # name rescued in the same second keeps its ref).
            res = await git("update-ref", ref, commit.out.strip(), "", cwd=ws, env=where)
            if res.ok:
                return ref
            if not (await git("rev-parse", "--verify", "--quiet", ref, cwd=ws, env=where)).ok:
                break  # failed for another reason than an existing ref
        raise ConflictError(f"could not save the changes in {ws}: {res.err}")

    async def require_purgeable(self, session: Session, force: bool) -> None:
        """Refuse (conflict) a purge that would lose work: changes without force, and even
        with force a worktree git cannot read, repositories inside it with work of their own,
        a worktree the user locked, or a worktree folder that is now a link (it would purge
        what the link names)."""
        if session.kind == "worktree" and os.path.islink(session.workspace):
            raise ConflictError(
                f"the workspace {session.workspace} is now a symbolic link (to "
                f"{os.path.realpath(session.workspace)}), not the worktree the session made; "
                "nothing is purged through it: remove the link, then purge again"
            )
        git_dir = _linked_git_dir(session.workspace) if session.kind == "worktree" else None
        if git_dir and os.path.exists(os.path.join(git_dir, "locked")):
            raise ConflictError(
                f"the worktree {session.workspace} is locked (git worktree lock); if it may "
                f"go, unlock it with `git -C {session.repo} worktree unlock "
                f"{session.workspace}`, then purge again"
            )
        await self.require_rescuable(session)
        if force:
            await self.changes(session)
        else:
            await self.require_clean(session)

    async def require_rescuable(self, session: Session) -> None:
        """Refuse (conflict) a purge that would lose work a rescue cannot keep: a repository
        inside the worktree (a submodule, or one made or cloned there, in an ignored folder
        too) with commits on no remote branch or with uncommitted changes. Its git folder is
        its own, or for a submodule under the worktree's, which the purge removes; a rescue
        commit records only which commit it is at."""
        if session.kind != "worktree" or not os.path.isdir(session.workspace):
            return
        found = []
        for path in await self._repositories_inside(session):
            why = await _work_of_its_own(os.path.join(session.workspace, path))
            if why:
                found.append(f"{path} ({why})")
        if found:
            raise ConflictError(
                f"the worktree {session.workspace} holds git repositories with work a rescue "
                f"cannot keep (it records only which commit they are at): {', '.join(found)}; "
                "push or commit their work to a branch of their remote, or move them out of "
                "the worktree, then purge again",
                changes=found[:50],
            )

    async def _repositories_inside(self, session: Session) -> list[str]:
        """The git repositories inside a worktree, as paths relative to it: initialised
        submodules, untracked ones (git does not enter them: `? dir/`), and any in a folder
        git ignores (found by walking it, which git does not do)."""
        ws, env = session.workspace, _in_worktree(session)
        found: list[str] = []
        modules = await git(
            "config", "-z", "--file", ".gitmodules", "--get-regexp", r"^submodule\..*\.path$",
            cwd=ws, env=env,
        )  # fmt: skip
        for entry in modules.out.split("\0") if modules.ok else ():
            path = entry.partition("\n")[2]
            if path and os.path.lexists(os.path.join(ws, path, ".git")):
                found.append(path)
        status = await git(
            "status", "--porcelain=v2", "-z", "--untracked-files=all", "--ignored=matching",
            "--ignore-submodules=all",
            cwd=ws, env=env,
        )  # fmt: skip
        for entry in status.out.split("\0") if status.ok else ():
            kind, path = entry[:2], entry[2:]
            if kind == "? " and path.endswith("/"):
                found.append(path)
            elif kind == "! " and path.endswith("/") and not path.startswith(f"{META_DIR}/"):
                found.extend(await asyncio.to_thread(_repositories_under, ws, path))
        return found

    async def require_clean(self, session: Session) -> list[str]:
        """Refuse (conflict) a purge of a worktree with uncommitted changes, or with ignored
        files that are not mere caches (a rescue does not keep them); returns the changes
        (none)."""
        changed = await self.changes(session)
        ignored = await self._ignored_work(session)
        ws = session.workspace
        if changed and ignored:
            message = (
                f"the worktree {ws} has {describe_changes(changed)}, and {len(ignored)} "
                f"ignored file(s) or folder(s) that a rescue does not keep ({_listed(ignored)})"
                "; commit the changes and move the ignored files out, or delete with force to "
                "save the changes to a rescue ref first and delete the ignored files"
            )
        elif changed:
            message = (
                f"the worktree {ws} has {describe_changes(changed)}; commit them, or delete "
                "with force to save them to a rescue ref first"
            )
        elif ignored:
            message = (
                f"the worktree {ws} holds {len(ignored)} ignored file(s) or folder(s) that a "
                f"purge would delete and a rescue does not keep ({_listed(ignored)}); move "
                "them out of the worktree, or delete with force to delete them too"
            )
        else:
            return changed
        raise ConflictError(
            message, changes=(changed + [f"!! {path}" for path in ignored])[:50], field="force"
        )

    async def _ignored_work(self, session: Session) -> list[str]:
        """Files and folders git ignores in a worktree (`data/`, `model.pkl`), which a purge
        deletes and a rescue does not keep; caches that tools make again (DISPOSABLE), the
        engine's own `.mas/` and an instructions file holding only a persona's section are
        left out."""
        if session.kind != "worktree" or not os.path.isdir(session.workspace):
            return []
        res = await git(
            "status", "--porcelain", "-z", "--ignored=matching", "--untracked-files=normal",
            cwd=session.workspace, env=_in_worktree(session),
        )  # fmt: skip
        found = []
        for entry in res.out.split("\0") if res.ok else ():
            path = entry[3:]
            if not entry.startswith("!! ") or path.startswith(f"{META_DIR}/"):
                continue
            if _disposable(path):
                continue
            at_top = "/" not in path.rstrip("/")
            if at_top and _only_a_persona(os.path.join(session.workspace, path)):
                continue
            found.append(path)
        return found

    async def _drop_worktree(self, session: Session, half_made: bool = False) -> None:
        # The caller holds the repository's lock. A half-made worktree is still locked by
        # `git worktree add` ("initializing"), which a second --force overrides.
        assert session.repo
        if os.path.isdir(session.workspace):
            forces = ("--force", "--force") if half_made else ("--force",)
            await git(
                "worktree", "remove", *forces, "--end-of-options", session.workspace,
                cwd=session.repo,
            )  # fmt: skip
        await git("worktree", "prune", cwd=session.repo)

    async def remove(
        self, session: Session, force: bool = False, instructions: Sequence[str] = ()
    ) -> str | None:
        """Remove a session's workspace; a dirty worktree needs force and is rescued first.

        A `dir` session's folder is the user's: it keeps everything but the persona sections
        written into its `instructions` files."""
        rescued = None
        if session.kind == "worktree":
            await self.require_purgeable(session, force)
            rescued = await self.rescue(session)
            assert session.repo
            async with self._lock(session.repo):
                await self._drop_worktree(session)
            if os.path.isdir(session.workspace) and self.owns(session.workspace):
                shutil.rmtree(session.workspace, ignore_errors=True)
        elif session.kind == "quick":
            if self.owns(session.workspace):
                shutil.rmtree(session.workspace, ignore_errors=True)
        else:  # dir: the folder is the user's; what the engine kept of it goes
            shutil.rmtree(os.path.join(self.dir_sessions, session.id), ignore_errors=True)
            await self.remove_personas(session, instructions)
        self.remove_metadata(session)
        return rescued

    async def remove_personas(
        self, session: Session, files: Sequence[str], owner: str | None = None
    ) -> None:
        """Take the persona sections (every one, or only the worker `owner`'s) out of the
        workspace's instructions `files`; nothing is written through a workspace a link
        replaced.

        A worktree's file whose committed version holds a section too (an agent committed
        it) is left as it is: taking the section out would be a change to commit."""
        if not self.in_place(session):
            return
        for name in files:
            if session.kind == "worktree" and section_owner(session.workspace, name) is not None:
                env = _in_worktree(session)
                blob = await git("cat-file", "blob", f"HEAD:{name}", cwd=session.workspace, env=env)
                if blob.ok and without_section(blob.out) is not None:
                    continue
            remove_instructions(session.workspace, name, owner)

    async def undo_worktree(self, session: Session) -> None:
        """Undo a half-made worktree: remove it, and its branch if this create made the branch
        and nothing was committed on it.

        The branch is this create's only when it is checked out in the session's worktree:
        `git worktree add -b` makes both or neither. A create refused because the branch
        already existed (or a crash before the worktree was made) leaves the user's branch
        alone, even when it points at the base.
        """
        if not session.repo or not os.path.isdir(session.repo):
            return
        async with self._lock(session.repo):
            # A killed server's `git worktree add` may still be checking files out.
            left = await asyncio.to_thread(processes.gits_at, session.workspace)
            await processes.end_leftovers(left, timeout=2.0)
            made_branch = await self._checked_out_here(session)
            await self._drop_worktree(session, half_made=True)
            if made_branch and session.branch and session.base:
                tip = await git(
                    "rev-parse",
                    "--verify",
                    "--quiet",
                    f"refs/heads/{session.branch}",
                    cwd=session.repo,
                )
                base = await git(
                    "rev-parse",
                    "--verify",
                    "--quiet",
                    "--end-of-options",
                    f"{session.base}^{{commit}}",
                    cwd=session.repo,
                )
                if tip.ok and base.ok and tip.out.strip() == base.out.strip():
                    await git("branch", "-D", "--end-of-options", session.branch, cwd=session.repo)

    async def _checked_out_here(self, session: Session) -> bool:
        """Whether the session's branch is checked out in the session's own worktree."""
        assert session.repo
        if not session.branch or not os.path.isdir(session.workspace):
            return False
        res = await git("worktree", "list", "--porcelain", cwd=session.repo)
        if not res.ok:
            return False
        here = os.path.realpath(session.workspace)
        for block in res.out.split("\n\n"):
            lines = block.splitlines()
            path = next((ln[9:] for ln in lines if ln.startswith("worktree ")), None)
            if path is not None and os.path.realpath(path) == here:
                return f"branch refs/heads/{session.branch}" in lines
        return False

    async def prune(self, repo: str) -> None:
        """Forget worktrees whose directories are gone."""
        if os.path.isdir(repo):
            async with self._lock(repo):
                await git("worktree", "prune", cwd=repo)

    # metadata

    def metadata_path(self, session: Session) -> str:
        """Where a session's metadata file lives."""
        if session.kind == "dir":
            return os.path.join(self.dir_sessions, f"{session.id}.json")
        return os.path.join(session.workspace, META_DIR, META_FILE)

    def write_metadata(self, session: Session, new_workspace: str | None = None) -> None:
        """Write the metadata file, atomically (temporary file, then rename) as it may replace
        one. Into a `new_workspace` (just made: the final path or a staging copy) it is written
        in place: a torn file there (a crash) only means start-up undoes the create, as it
        would without the file."""
        text = json.dumps(session.metadata())
        if new_workspace:
            folder = os.path.join(new_workspace, META_DIR)
            os.makedirs(folder, exist_ok=True)  # a repository may track a .mas folder
            _write_ignore(folder)
            with open(os.path.join(folder, META_FILE), "w") as fh:
                fh.write(text)
            return
        if session.kind != "dir" and not self.in_place(session):
            return  # a link replaced the workspace: written again once the folder is back
        if session.kind != "dir" and not os.path.isdir(session.workspace):
            return  # deleted under it: not made again, empty (a resume says it is gone)
        path = self.metadata_path(session)
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        _write_ignore(folder)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".session-", suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)

    def remove_metadata(self, session: Session) -> None:
        """Remove a session's metadata file (the workspace itself may stay)."""
        if session.kind == "dir" or self.in_place(session):  # a dir session's is ours
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.metadata_path(session))

    def read_metadata(self, path: str) -> dict | None:
        """A metadata file's content, or None if it is missing or unreadable."""
        try:
            with open(path) as fh:
                data = json.load(fh)
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and "id" in data else None

    def scan(self) -> list[dict]:
        """Every session's metadata found under the sessions root."""
        found = []
        with os.scandir(self.root) as entries:
            for entry in entries:
                if entry.name == META_DIR or not entry.is_dir(follow_symlinks=False):
                    continue
                data = self.read_metadata(os.path.join(entry.path, META_DIR, META_FILE))
                if data:
                    found.append(data)
        if os.path.isdir(self.dir_sessions):
            for fname in sorted(os.listdir(self.dir_sessions)):
                if fname.endswith(".json"):
                    data = self.read_metadata(os.path.join(self.dir_sessions, fname))
                    if data:
                        found.append(data)
        return found

    def clear_staging(self, session_id: str) -> None:
        """Remove a half-filled quick workspace left by a crash."""
        shutil.rmtree(os.path.join(self.staging_dir, session_id), ignore_errors=True)

    def clear_rescue_indexes(self) -> None:
        """Remove the temporary git indexes of rescues a crash cut short (at start, when no
        rescue runs: the engine holds the root's lock)."""
        with os.scandir(self.state_dir) as entries:
            for entry in entries:
                if entry.name.startswith(RESCUE_INDEX_PREFIX) and entry.is_dir():
                    shutil.rmtree(entry.path, ignore_errors=True)


def _copy_template(src: str, dst: str, top: bool = True) -> None:
    """Copy a template folder: files with their permission bits, times fresh.

    Symlinks are skipped (a workspace must not point outside its root), and so are named
    pipes, sockets and devices (reading a pipe would wait for a writer), and so is a
    template's own `.mas` folder (a workspace's state is its own). Unlike shutil.copytree
    this copies no times or extended attributes, which a new workspace does not want and
    which cost more than the copy of a small template.
    """
    os.mkdir(dst)
    with os.scandir(src) as entries:
        for entry in entries:
            target = os.path.join(dst, entry.name)
            if entry.is_symlink() or (top and entry.name == META_DIR):
                continue
            if entry.is_dir():
                _copy_template(entry.path, target, top=False)
            elif entry.is_file():  # not a named pipe, a socket or a device
                shutil.copyfile(entry.path, target)
                os.chmod(target, entry.stat().st_mode & 0o7777)


def _write_ignore(folder: str) -> None:
    path = os.path.join(folder, ".gitignore")
    if not os.path.exists(path):
        with open(path, "w") as fh:
            fh.write("# mas_jupyter's own state; never part of the work\n*\n")


@functools.lru_cache(maxsize=4096)
def _browser_path(workspace: str, root: str) -> str | None:
    # Text only, no file system: the listing asks it for every session each time it is rebuilt
    # (relpath and commonpath were half of that rebuild with 1,000 sessions).
    if workspace and validate.inside(workspace, root):
        return os.path.relpath(workspace, root).replace(os.sep, "/")
    return None


def describe_changes(changes: list[str]) -> str:
    """`N uncommitted or untracked change(s) (a.py, notes.md, ...)` for porcelain lines."""
    names = ["commits on a detached HEAD" if c.startswith("## ") else c[3:] for c in changes]
    return f"{len(changes)} uncommitted or untracked change(s) ({_listed(names)})"


def _listed(names: list[str], most: int = 10) -> str:
    return ", ".join(names[:most]) + (", ..." if len(names) > most else "")


def _repositories_under(top: str, folder: str) -> list[str]:
    """The git repositories in a folder of the worktree `top` (its own path included), as
    paths relative to `top`; the inside of a repository found is not searched."""
    found = []
    for here, dirs, files in os.walk(os.path.join(top, folder)):
        if ".git" in dirs or ".git" in files:
            found.append(os.path.relpath(here, top) + "/")
            dirs.clear()
    return found


async def _work_of_its_own(repo: str) -> str | None:
    """What work a repository inside a worktree holds that is nowhere else: commits on no
    remote branch, uncommitted changes, or (git cannot read it) anything."""
    env = _only_in(repo)
    status = await git("status", "--porcelain", cwd=repo, env=env)
    if not status.ok:
        return "git cannot read it"
    why = []
    if (await git("rev-parse", "--verify", "--quiet", "HEAD", cwd=repo, env=env)).ok:
        local = await git(
            "rev-list", "-n", "1", "HEAD", "--branches", "--not", "--remotes", cwd=repo, env=env
        )
        if not local.ok or local.out.strip():
            why.append("commits on no remote branch")
    if status.out.strip():
        why.append("uncommitted changes")
    return " and ".join(why) or None


def _only_a_persona(path: str) -> bool:
    """Whether a file holds a persona's section and nothing else."""
    rest = _without_persona(path)
    return rest is not None and not rest.strip()


def _without_persona(path: str, errors: str = "surrogateescape") -> str | None:
    """A workspace file's text without the persona section in it; None when it holds none,
    or is a link, too big for an instructions file, or unreadable."""
    try:
        if os.path.islink(path) or os.path.getsize(path) > 4 * PERSONA_FILE_MAX:
            return None
        return without_section(read_text(path, errors=errors))
    except OSError:
        return None
