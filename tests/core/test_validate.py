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
     "PATH", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONUSERBASE", "PERL5OPT", "JUPYTER_TOKEN",
     "BASH_FUNC_x%%", "1BAD", "A-B", "", "A=B"],
)  # fmt: skip
def test_hostile_environment_keys_are_refused(key):
    with pytest.raises(InvalidError):
        validate.env({key: "x"})


@pytest.mark.parametrize("key", ["MAS_SESSION", "MAS_SESSION_ID", "MAS_WORKER", "MAS_WORKSPACE"])
def test_the_variables_the_server_sets_are_refused(key):
    # They name the worker (a restart finds a dead worker's leftover processes by them).
    with pytest.raises(InvalidError, match="the server sets it"):
        validate.env({key: "x"})
    assert validate.env({"MAS_TOKEN": "t"}) == {"MAS_TOKEN": "t"}  # the user's to give


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


# A lone surrogate: what json.loads makes of "\ud800", a str that has no UTF-8 encoding.
LONE = "\ud800"


@pytest.mark.parametrize(
    "check",
    [
        lambda v: validate.task(v),
        lambda v: validate.path_text(v, "path"),
        lambda v: validate.branch("mas/" + v),
        lambda v: validate.env({"A": v}),
        lambda v: validate.unicode_text(v, "data"),
    ],
    ids=["task", "path", "branch", "env", "text"],
)
@pytest.mark.parametrize("value", [LONE, "x\udfff", "\udc80", "ok" + LONE + "ok"])
def test_text_with_a_lone_surrogate_is_refused(check, value):
    with pytest.raises(InvalidError, match="not valid Unicode"):
        check(value)


def test_text_beyond_ascii_is_fine():
    text = "données → résumé ✓ 数据 \U0001f600"
    assert validate.unicode_text(text, "data") == text
    assert validate.task(text) == text
    assert validate.env({"A": text}) == {"A": text}


def test_lone_surrogates_are_found_anywhere_in_a_body():
    validate.unicode_body({"a": ["b", {"c": "é", "d": [1, None, True, 2.5]}]})
    for body in (
        {"task": LONE},
        {LONE: 1},
        {"workers": [{"env": {"A": "x" + LONE}}]},
        {"workers": [{"env": {"x" + LONE: "v"}}]},
        {"a": [[[["\udfff"]]]]},
    ):
        with pytest.raises(InvalidError, match="not valid Unicode"):
            validate.unicode_body(body)
    # Deep nesting is walked without recursion.
    deep: list = [LONE]
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(InvalidError, match="not valid Unicode"):
        validate.unicode_body({"a": deep})


def test_environment_values_name_the_key_and_the_limit():
    with pytest.raises(InvalidError, match="'MY_VAR'.*not valid Unicode"):
        validate.env({"MY_VAR": "a" + LONE})
    with pytest.raises(InvalidError, match="'MY_VAR'.*32768"):
        validate.env({"MY_VAR": "x" * 32769})
    assert validate.env({"MY_VAR": "x" * 32768}) == {"MY_VAR": "x" * 32768}
    with pytest.raises(InvalidError, match="'MY_VAR'.*must be a string"):
        validate.env({"MY_VAR": 5})
    with pytest.raises(InvalidError, match="not a valid variable name"):
        validate.env({"A" + LONE: "x"})


@pytest.mark.parametrize(
    "value",
    ["123e4567-e89b-12d3-a456-426614174000", "123E4567-E89B-12D3-A456-426614174000",
     "00000000-0000-0000-0000-000000000000"],
)  # fmt: skip
def test_names_shaped_like_an_id_are_refused(value):
    # {sid} and {wid} take an id or a name: a name that looks like an id would be ambiguous.
    with pytest.raises(InvalidError, match="looks like an id"):
        validate.name(value)
    with pytest.raises(InvalidError, match="looks like an id"):
        validate.name(value, "worker name")


@pytest.mark.parametrize(
    "value",
    [
        "123e4567",
        "123e4567-e89b",
        "123e4567-e89b-12d3-a456-42661417400",
        "g23e4567-e89b-12d3-a456-426614174000",
    ],
)
def test_names_that_merely_resemble_an_id_pass(value):
    assert validate.name(value) == value


@pytest.mark.parametrize(
    "value", ["refs/heads/x", "refs/x", "heads/x", "tags/v1", "remotes/origin/x", "refs/mas/y"]
)
def test_branch_names_that_read_as_a_ref_path_are_refused(value):
    # `git branch refs/heads/x` makes refs/heads/refs/heads/x, which `refs/heads/x` and
    # `git checkout x` no longer reach the way a user expects.
    with pytest.raises(InvalidError, match="full ref"):
        validate.branch(value)


@pytest.mark.parametrize("value", ["mas/refs", "feature/heads", "headsup", "refsx/y", "tagsy"])
def test_branch_names_merely_containing_ref_words_pass(value):
    assert validate.branch(value) == value
