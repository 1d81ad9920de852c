"""openapi.yaml is the one description of the REST API: every route is in it, the docs follow
it, and schemathesis finds no 5xx and no non-conforming response on a running server."""

from __future__ import annotations

import json
import os
import pathlib
import re
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from jupyter_server.base.handlers import APIHandler
from tornado.websocket import WebSocketHandler

from mas_jupyter.server.handlers import NoRouteHandler
from mas_jupyter.server.openapi import openapi_document

DOCS = pathlib.Path(__file__).parents[2] / "docs"
METHODS = ("get", "post", "patch", "put", "delete")
SCHEMATHESIS = os.path.join(os.path.dirname(sys.executable), "schemathesis")


def registered_routes(mas_app) -> tuple[dict[str, set[str]], list[str]]:
    """REST path template -> methods, and the WebSocket paths, as the extension registers them."""
    rest: dict[str, set[str]] = {}
    sockets = []
    for pattern, handler, *_ in mas_app.handlers:
        path = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", pattern).removeprefix("/api/mas")
        if handler is NoRouteHandler:
            continue
        if issubclass(handler, WebSocketHandler):
            sockets.append(path)
            continue
        rest[path] = {m for m in METHODS if getattr(handler, m) is not getattr(APIHandler, m)}
    return rest, sockets


def test_every_registered_route_is_in_the_openapi_document(mas_app):
    rest, sockets = registered_routes(mas_app)
    doc = openapi_document()
    documented = {path: {m for m in item if m in METHODS} for path, item in doc["paths"].items()}
    assert rest == documented
    assert sorted(sockets) == ["/events", "/sessions/{sid}/workers/{wid}/channel"]


def test_every_operation_is_in_the_rest_api_doc_with_a_curl_example():
    text = (DOCS / "rest-api.md").read_text()
    for path, item in openapi_document()["paths"].items():
        for method in item:
            if method in METHODS:
                assert f"{method.upper()} {path}" in text, f"{method.upper()} {path} undocumented"
    assert text.count("curl ") >= sum(
        1 for item in openapi_document()["paths"].values() for m in item if m in METHODS
    )
    for ws in ("/sessions/{sid}/workers/{wid}/channel", "/events"):
        assert f"WS {ws}" in text


def test_every_extension_option_is_documented_with_its_default():
    from mas_jupyter.server.app import MASExtensionApp

    text = (DOCS / "rest-api.md").read_text()
    for name, trait in MASExtensionApp.class_own_traits(config=True).items():
        assert f"`c.MASExtensionApp.{name}`" in text, name
        if name != "manager_class":
            assert f"`{trait.default()}`" in text, name


@pytest.fixture
def server_process(tmp_path):
    """A real `jupyter server` with mas_jupyter, in its own process; yields (base URL, token)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = "schemathesis-token"
    root = tmp_path / "root"
    root.mkdir()
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    config = {
        "ServerApp": {
            "jpserver_extensions": {
                "mas_jupyter": True,
                "jupyterlab": False,
                "notebook": False,
                "jupyter_lsp": False,
                "notebook_shim": False,
            },
            "allow_root": True,
            "root_dir": str(root),
            "port": port,
            "port_retries": 0,
            "ip": "127.0.0.1",
            "open_browser": False,
        },
        "IdentityProvider": {"token": token},
        "MASManager": {
            "tmux_socket": str(tmp_path / "tmux.sock"),
            "max_sessions": 30,
            "max_workers": 12,
            "max_workers_per_session": 3,
        },
    }
    (config_dir / "jupyter_server_config.json").write_text(json.dumps(config))
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(config_dir),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTER_DATA_DIR": str(tmp_path / "data"),
        "MAS_DEMO_DELAY": "0.05",
    }
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter_server"],
        env=env,
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _call(base, token, "GET", "/api/mas/sessions")
                break
            except OSError:
                assert proc.poll() is None, (tmp_path / "server.log").read_text()
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
        yield base, token, tmp_path / "server.log"
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()
        # The server leaves its tmux workers running on purpose (a restart finds them again).
        tmux = ["tmux", "-S", config["MASManager"]["tmux_socket"], "kill-server"]
        subprocess.run(tmux, capture_output=True, timeout=10)


def _call(base: str, token: str, method: str, path: str, body: object = None) -> object:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        base + path, data=data, method=method, headers={"Authorization": f"token {token}"}
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        raw = r.read()
    return json.loads(raw) if raw else None


@pytest.mark.skipif(not os.path.exists(SCHEMATHESIS), reason="schemathesis is not installed")
def test_schemathesis_finds_no_server_error_and_no_nonconforming_response(server_process):
    base, token, log = server_process
    # Something for the examples to act on: a session "demo" with a demo agent "bot".
    worker = {"name": "bot", "kind": "agent", "backend": "demo"}
    _call(base, token, "POST", "/api/mas/sessions", {"name": "demo", "workers": [worker]})
    spec = pathlib.Path(__file__).parents[2] / "mas_jupyter" / "server" / "openapi.yaml"
    cmd = [
        SCHEMATHESIS,
        "run",
        str(spec),
        "--url",
        f"{base}/api/mas",
        "-H",
        f"Authorization: token {token}",
        "--checks",
        "not_a_server_error,status_code_conformance,content_type_conformance,"
        "response_schema_conformance",
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        "15",
        "--seed",
        "1",
        "--workers",
        "1",
        "--request-timeout",
        "20",
        "--generation-database",
        "none",
        "--no-color",
    ]
    result = subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, cwd=log.parent
    )  # cwd: schemathesis writes a .schemathesis folder there
    assert result.returncode == 0, result.stdout[-6000:] + log.read_text()[-3000:]
