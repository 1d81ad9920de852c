"""docs/rest-api.md's curl examples run as written, in order, against one fresh server.

Every ```sh block that calls curl is run by bash, one after another, with only JUPYTER and
TOKEN set, as a user pasting them would. A `curl` shell function (the test's, not the doc's)
adds a time limit and records each call's HTTP status; every call must answer 2xx, unless a
comment before it in the block says `# answers NNN` (an example that shows an error on
purpose). An example that acts on a session or worker an earlier one renamed or deleted gets
a 404 and fails here.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess

import pytest

from bench.server import JupyterServer

PAGE = pathlib.Path(__file__).parents[2] / "docs" / "rest-api.md"
BLOCK = re.compile(r"^```sh\n(.*?)^```", re.S | re.M)
ANSWERS = re.compile(r"^\s*#.*\banswers ([1-5]\d\d)\b")
MARK = "mas-doc-example-status"
# Each call is bounded; the status goes to stderr, the body stays on stdout as the user sees it.
PRELUDE = f"""\
set -eu
curl() {{ command curl --max-time 60 -w '%{{stderr}}\\n{MARK} %{{http_code}}\\n' "$@"; }}
"""


def curl_blocks() -> list[str]:
    return [b for b in BLOCK.findall(PAGE.read_text()) if re.search(r"^\s*curl ", b, re.M)]


def expected_statuses(block: str) -> list[int | None]:
    """One entry per curl command of the block: the status it says it answers, or None (2xx)."""
    expected: list[int | None] = []
    pending = None
    for line in block.splitlines():
        said = ANSWERS.match(line)
        if said:
            pending = int(said.group(1))
        elif re.match(r"\s*curl ", line):
            expected.append(pending)
            pending = None
    return expected


@pytest.fixture
def doc_server(tmp_path):
    if shutil.which("curl") is None:
        if os.environ.get("CI"):
            pytest.fail("curl is not installed (.ci/run installs it)")
        pytest.skip("curl is not installed")
    server = JupyterServer(
        str(tmp_path / "root"), base=str(tmp_path / "base"), env={"MAS_DEMO_DELAY": "0.05"}
    )
    try:
        server.start(timeout=60)
        yield server
    finally:
        server.close()


def test_rest_api_doc_curl_examples_run_in_order(doc_server, tmp_path):
    blocks = curl_blocks()
    assert len(blocks) >= 20, "the page's curl examples were not found"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "JUPYTER": doc_server.url,
        "TOKEN": doc_server.token,
    }
    for number, block in enumerate(blocks, 1):
        result = subprocess.run(
            ["bash", "--norc", "--noprofile", "-c", PRELUDE + block],
            env=env,
            capture_output=True,
            text=True,
            timeout=150,
        )
        statuses = [int(s) for s in re.findall(rf"^{MARK} (\d+)$", result.stderr, re.M)]
        expected = expected_statuses(block)
        where = (
            f"example {number} of docs/rest-api.md:\n{block}\n"
            f"statuses {statuses}, exit {result.returncode}\n"
            f"stdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-2000:]}"
        )
        assert result.returncode == 0, where
        assert len(statuses) == len(expected), where
        for status, wanted in zip(statuses, expected, strict=True):
            if wanted is None:
                assert 200 <= status < 300, where
            else:
                assert status == wanted, where
