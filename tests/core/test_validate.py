"""Validation of user input at the engine's boundary, with hostile values."""

from __future__ import annotations

import subprocess

import pytest

from mas_jupyter.core import validate
from mas_jupyter.core.errors import ForbiddenError, InvalidError

BRANCHES = [
    "mas/churn", "feature/x-1", "a.b", "UPPER", "x_y", "@", "-x", "a..b", "a b", "a~1",
    "a^", "a:b", "a?", "a*", "a[", "a\\b", "/a", "a/", "a//b", "a.", ".a", "a/.b", "a.lock",
    "a/b.lock/c", "a@{1}", "a\x7f", "a\tb", "HEAD", "é", "ok/é",
]  # fmt: skip


@pytest.mark.parametrize("branch", BRANCHES)
def test_branch_rules_agree_with_git(branch):
    git_ok = (
        subprocess.run(
            ["git", "check-ref-format", "--branch", branch], capture_output=True
        ).returncode
        == 0
    )
    try:
        validate.branch(branch)
        ours = True
    except InvalidError:
        ours = False
    # We may be stricter than git (non-ASCII is fine for git), never looser.
    assert ours <= git_ok, f"{branch!r}: ours={ours} git={git_ok}"
    # '@' alone is git's shorthand for HEAD, which we refuse as a branch name.
    if branch.isascii() and branch != "@":
        assert ours == git_ok, f"{branch!r}: ours={ours} git={git_ok}"


@pytest.mark.parametrize(
    "value",
    ["", ".", "..", ".x", "-x", "a/b", "a\\b", "a b", "a\x00", "a\n", "x" * 65, "a..b", "a.lock",
     "a.", "ü", None, 3, ["a"], "a\n"],
)  # fmt: skip
def test_hostile_names_are_refused(value):
    with pytest.raises(InvalidError):
        validate.name(value)


@pytest.mark.parametrize("value", ["a", "session-001", "A.b_c-d", "x" * 64])
def test_good_names_pass(value):
    assert validate.name(value) == value


@pytest.mark.parametrize(
    "key",
    ["LD_PRELOAD", "ld_library_path", "DYLD_INSERT_LIBRARIES", "NODE_OPTIONS", "BASH_ENV",
     "PATH", "PYTHONPATH", "PYTHONSTARTUP", "PERL5OPT", "JUPYTER_TOKEN", "BASH_FUNC_x%%",
     "1BAD", "A-B", "", "A=B"],
)  # fmt: skip
def test_hostile_environment_keys_are_refused(key):
    with pytest.raises(InvalidError):
        validate.env({key: "x"})


def test_plain_environment_passes_and_values_are_checked():
    assert validate.env({"MYBOT_MODE": "fast"}) == {"MYBOT_MODE": "fast"}
    with pytest.raises(InvalidError, match="without NUL"):
        validate.env({"A": "x\x00y"})
    with pytest.raises(InvalidError):
        validate.env(["A=B"])


def test_contained_path(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    assert validate.contained_path("sub", [str(root)], "path") == str(root / "sub")
    assert validate.contained_path(str(root / "sub"), [str(root)], "path") == str(root / "sub")
    for bad in ["..", "../root-evil", "/", "sub/../../x"]:
        with pytest.raises(ForbiddenError):
            validate.contained_path(bad, [str(root)], "path")
    with pytest.raises(InvalidError):
        validate.contained_path("a\x00", [str(root)], "path")


def test_closed_fields():
    validate.closed_fields({"a": 1}, {"a", "b"}, "x")
    with pytest.raises(InvalidError, match="unknown field.*command"):
        validate.closed_fields({"a": 1, "command": "rm"}, {"a"}, "x")


@pytest.mark.parametrize("value", [True, "1", 1.5, None])
def test_integers_are_integers(value):
    with pytest.raises(InvalidError):
        validate.integer(value, "n", 0, 10)
