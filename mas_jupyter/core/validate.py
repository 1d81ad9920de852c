"""Validation of every user-given field at the engine's boundary.

Each function returns the cleaned value or raises InvalidError/ForbiddenError with a message
that says what is wrong and what is accepted. Nothing here touches the filesystem beyond
resolving paths, and nothing runs git.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection

from .errors import ForbiddenError, InvalidError
from .models import SESSION_KINDS, WORKER_KINDS

NAME_MAX = 64
TASK_MAX = 200
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
# Git's ref rules (git-check-ref-format), checked in Python so bad input costs no git call.
_REF_FORBIDDEN_RE = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")
# A revision may use ~ and ^ (main~2, HEAD^) but nothing that would read as an option or range.
_REV_RE = re.compile(r"^[A-Za-z0-9._/@{}~^-]+$")
# What an id looks like: {sid} and {wid} take an id or a name, so no name may look like one.
_UUID_RE = re.compile(
    r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$"
)
# Branch names that read as a ref path: git would nest them (refs/heads/refs/heads/x) and a
# short name such as heads/x resolves to refs/heads/x before refs/heads/heads/x.
_REF_PATH_PREFIXES = ("refs/", "heads/", "tags/", "remotes/")
ENV_VALUE_MAX = 32768
COLS = (10, 1000)  # a terminal's width, smallest and largest
ROWS = (5, 500)  # its height

# Environment keys that change how a program or its interpreter loads code.
_ENV_DENY = {
    "PATH",
    "BASH_ENV",
    "ENV",
    "SHELLOPTS",
    "BASHOPTS",
    "PROMPT_COMMAND",
    "IFS",
    "PS4",
    "NODE_OPTIONS",
    "NODE_PATH",
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
    "PYTHONINSPECT",
    "PERL5OPT",
    "PERL5LIB",
    "PERLLIB",
    "RUBYOPT",
    "RUBYLIB",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "GIT_EXEC_PATH",
    "GIT_CONFIG",
    "GIT_CONFIG_GLOBAL",
    "GIT_CONFIG_SYSTEM",
    "GCONV_PATH",
    "HOSTALIASES",
    "LOCALDOMAIN",
    "RESOLV_HOST_CONF",
    "TMUX",
    "PYTHONUSERBASE",
}
# What the server sets in every worker (its session, name, workspace): a worker's own, and how
# a restart tells a dead worker's leftover processes from anyone else's.
WORKER_MARKS = ("MAS_SESSION", "MAS_SESSION_ID", "MAS_WORKER", "MAS_WORKSPACE")
_ENV_DENY_PREFIXES = ("LD_", "DYLD_", "JUPYTER", "GIT_CONFIG_", "BASH_FUNC_")


def next_free(base: str, taken: Collection[str]) -> str:
    """`base`, else `base-2`, `base-3`, ...: the first name not taken (a worker's default)."""
    number = 1
    candidate = base
    while candidate in taken:
        number += 1
        suffix = f"-{number}"
        candidate = base[: NAME_MAX - len(suffix)] + suffix
    return candidate


def name(value: object, what: str = "name") -> str:
    """A session, worker or template name: safe characters, usable in paths and branch names."""
    if not isinstance(value, str):
        raise InvalidError(f"{what} must be a string")
    if not value:
        raise InvalidError(f"{what} must not be empty")
    if len(value) > NAME_MAX:
        raise InvalidError(f"{what} is longer than {NAME_MAX} characters")
    if not _NAME_RE.fullmatch(value) or ".." in value or value.endswith((".", ".lock")):
        raise InvalidError(
            f"{what} {value!r} is not allowed: use letters, digits, '.', '_' and '-', "
            "starting with a letter or digit, without '..' and not ending in '.' or '.lock'"
        )
    if _UUID_RE.fullmatch(value):
        raise InvalidError(
            f"{what} {value!r} is not allowed: it looks like an id (a UUID), and a URL takes "
            "an id or a name in the same place, so it could reach another session or worker; "
            "choose a name that is not shaped like a UUID"
        )
    return value


def optional_name(value: object, what: str = "name") -> str | None:
    """A name, or None when not given."""
    return None if value is None else name(value, what)


def task(value: object) -> str | None:
    """A task label: free text of one line, or None/empty to clear it."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidError("task must be a string or null")
    value = unicode_text(value, "task").strip()
    if not value:
        return None
    if len(value) > TASK_MAX:
        raise InvalidError(f"task is longer than {TASK_MAX} characters")
    if _CONTROL_RE.search(value):
        raise InvalidError("task must not contain control characters")
    return value


def choice(value: object, allowed: tuple[str, ...], what: str) -> str:
    """One of a closed set of words."""
    if value not in allowed:
        raise InvalidError(f"{what} must be one of: {', '.join(allowed)} (got {value!r})")
    return value  # type: ignore[return-value]


def session_kind(value: object) -> str:
    """A session kind: quick, worktree or dir."""
    return choice(value, SESSION_KINDS, "kind")


def worker_kind(value: object) -> str:
    """A worker kind: agent or terminal."""
    return choice(value, WORKER_KINDS, "worker kind")


def branch(value: object) -> str:
    """A new branch name, by git's rules for `git check-ref-format --branch`."""
    if not isinstance(value, str) or not value:
        raise InvalidError("branch must be a non-empty string")
    unicode_text(value, "branch")
    problem = _ref_problem(value)
    if value.startswith("-") or value == "HEAD":
        problem = "it must not start with '-' or be HEAD"
    elif not problem and value.startswith(_REF_PATH_PREFIXES):
        short = value.removeprefix("refs/")
        short = short.split("/", 1)[1] if short.startswith(_REF_PATH_PREFIXES) else short
        problem = (
            f"it reads as a full ref (git would make refs/heads/{value}); give the branch's "
            f"short name{f', such as {short!r}' if short else ''}"
        )
    if problem:
        raise InvalidError(f"branch {value!r} is not a valid git branch name: {problem}")
    return value


def _ref_problem(value: str) -> str | None:
    if len(value) > 200:
        return "it is longer than 200 characters"
    if _REF_FORBIDDEN_RE.search(value):
        return "it contains a space, control character or one of ~ ^ : ? * [ \\"
    if value.startswith("/") or value.endswith("/") or "//" in value:
        return "it must not start or end with '/' or contain '//'"
    if ".." in value or "@{" in value or value == "@":
        return "it must not contain '..' or '@{' or be '@'"
    if value.endswith("."):
        return "it must not end with '.'"
    for part in value.split("/"):
        if part.startswith(".") or part.endswith(".lock"):
            return "no part may start with '.' or end with '.lock'"
    return None


def revision(value: object, what: str = "base") -> str:
    """A base revision (branch, tag, commit, HEAD~2); resolved later with git rev-parse."""
    if not isinstance(value, str) or not value:
        raise InvalidError(f"{what} must be a non-empty string")
    if len(value) > 200 or not _REV_RE.fullmatch(value) or value.startswith("-") or ".." in value:
        raise InvalidError(
            f"{what} {value!r} is not a valid git revision: use a branch, tag or commit "
            "(letters, digits and . _ / @ ~ ^ -, not starting with '-', no '..')"
        )
    return value


def path_text(value: object, what: str) -> str:
    """A path string: non-empty text without NUL or control characters."""
    if not isinstance(value, str) or not value:
        raise InvalidError(f"{what} must be a non-empty string")
    unicode_text(value, what)
    if _CONTROL_RE.search(value):
        raise InvalidError(f"{what} must not contain NUL or control characters")
    if len(value) > 4096:
        raise InvalidError(f"{what} is too long")
    return value


def inside(path: str, root: str) -> bool:
    """Whether the real path `path` is `root` or below it (both already resolved)."""
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:
        return False


def contained_path(value: object, roots: list[str], what: str) -> str:
    """Resolve a user path (absolute, or relative to the first root) inside the allowed roots.

    Symlinks are resolved before the check, so a link that points out of a root is refused.
    """
    text = path_text(value, what)
    if not roots:
        raise ForbiddenError(f"no allowed roots are configured, so no {what} can be used")
    real_roots = [os.path.realpath(r) for r in roots]
    base = real_roots[0]
    resolved = os.path.realpath(os.path.join(base, os.path.expanduser(text)))
    if not any(inside(resolved, r) for r in real_roots):
        raise ForbiddenError(
            f"{what} {text!r} is outside the allowed roots ({', '.join(real_roots)}); "
            "add its parent to MASManager.allowed_roots to use it"
        )
    return resolved


def env(value: object) -> dict[str, str]:
    """Extra environment for a worker; keys that inject code into programs are refused."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidError("env must be an object of string keys and values")
    clean: dict[str, str] = {}
    for key, val in value.items():
        if not isinstance(key, str) or not _ENV_KEY_RE.fullmatch(key) or len(key) > 128:
            raise InvalidError(f"environment key {key!r} is not a valid variable name")
        if key.upper() in _ENV_DENY or key.upper().startswith(_ENV_DENY_PREFIXES):
            raise InvalidError(
                f"environment key {key!r} is refused: it can change which code a program "
                "loads or reveal server secrets"
            )
        if key in WORKER_MARKS:
            raise InvalidError(
                f"environment key {key!r} is refused: the server sets it to the worker's own"
            )
        if not isinstance(val, str):
            raise InvalidError(f"environment value of {key!r} must be a string")
        if len(val) > ENV_VALUE_MAX:
            raise InvalidError(
                f"environment value of {key!r} is longer than {ENV_VALUE_MAX} characters"
            )
        if "\x00" in val:
            raise InvalidError(f"environment value of {key!r} must be a string without NUL")
        unicode_text(val, f"environment value of {key!r}")
        try:  # what execve needs; refused here, a child that fails to exec would be far worse
            os.fsencode(val)
        except UnicodeError:
            raise InvalidError(
                f"environment value of {key!r} cannot be passed to a program in this "
                "server's filesystem encoding"
            ) from None
        clean[key] = val
    return clean


def unicode_text(value: str, what: str) -> str:
    """Text that has a UTF-8 encoding: no lone surrogate (a \\ud800-\\udfff escape without
    its pair, which JSON allows), so it can be stored, typed into a terminal or passed to a
    program."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise InvalidError(
                f"{what} is not valid Unicode: character {e.start} is a lone surrogate "
                f"({value[e.start]!r}, half of a UTF-16 pair); send UTF-8 text"
            ) from None
    return value


def unicode_body(data: object, what: str = "the body") -> None:
    """Refuse a parsed JSON document any of whose strings (keys or values, at any depth) is
    not valid Unicode, naming where it is. Walked without recursion: JSON may nest deeply."""
    stack: list[tuple[object, str]] = [(data, "")]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if not item.isascii():
                unicode_text(item, f"field {where} in {what}" if where else f"text in {what}")
        elif isinstance(item, dict):
            for key, value in item.items():
                if isinstance(key, str) and not key.isascii():
                    unicode_text(key, f"a field name in {what}")
                stack.append((value, f"{where}.{key}" if where else key))
        elif isinstance(item, list):
            stack.extend((value, f"{where}[{i}]") for i, value in enumerate(item))


def no_nulls(body: dict, nullable: set[str], what: str) -> None:
    """Refuse null for fields that may not be null: a field given as null is not taken as
    "not given" (the default) unless the API says so for that field."""
    for key, value in body.items():
        if value is None and key not in nullable:
            raise InvalidError(
                f"{key!r} must not be null in {what}: give a value or leave the field out"
            )


def boolean(value: object, what: str) -> bool:
    """true or false, nothing else (no null, 0, 1 or strings)."""
    if not isinstance(value, bool):
        raise InvalidError(f"{what} must be true or false")
    return value


def closed_fields(body: dict, allowed: set[str], what: str) -> None:
    """Refuse fields a request does not define, so typos and injections are not ignored."""
    unknown = sorted(set(body) - allowed)
    if unknown:
        known = f"allowed: {', '.join(sorted(allowed))}" if allowed else "it takes none"
        raise InvalidError(f"unknown field(s) for {what}: {', '.join(unknown)}; {known}")


def integer(value: object, what: str, low: int, high: int) -> int:
    """An integer within bounds (booleans are not integers here)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidError(f"{what} must be an integer")
    if not low <= value <= high:
        raise InvalidError(f"{what} must be between {low} and {high}")
    return value
