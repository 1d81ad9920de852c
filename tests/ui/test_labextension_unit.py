"""The side panel's TypeScript unit tests (node's test runner), run as part of pytest."""

from __future__ import annotations

import pathlib
import shutil
import subprocess

import pytest

LABEXTENSION = pathlib.Path(__file__).resolve().parents[2] / "labextension"


@pytest.mark.timeout(300)
def test_typescript_unit_tests_pass():
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed: install Node.js 20 (e.g. `apt-get install nodejs npm`)")
    if not (LABEXTENSION / "node_modules").is_dir():
        # `make install` installs them while building the extension; a bare checkout may not.
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=LABEXTENSION, check=True, timeout=240
        )
    result = subprocess.run(
        [npm, "test"], cwd=LABEXTENSION, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert "# fail 0" in result.stdout, result.stdout[-6000:]
