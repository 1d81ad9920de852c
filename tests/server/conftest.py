"""Fixtures for the server's tests: a Jupyter server with mas_jupyter, driven over HTTP and WS.

pytest only reads `pytest_plugins` from the top conftest, so the fixtures of
`pytest_jupyter.jupyter_server` are imported here, which scopes them to tests/server.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess

import pytest
from jsonschema import Draft202012Validator
from jupyter_server.auth import Authorizer
from pytest_jupyter import jupyter_server as _server_plugin
from pytest_jupyter import pytest_tornasync as _tornasync_plugin
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from tornado.httpclient import HTTPClientError
from traitlets.config import Config

from mas_jupyter.server.openapi import openapi_document
from tests.conftest import GIT_ENV
from tests.conftest import until as wait_until

OPENAPI_URI = "urn:mas-jupyter:openapi"

# pytest reads `pytest_plugins` only from the top conftest; taking the server plugin's fixtures
# into this module instead scopes them (and their autouse cleanup) to tests/server.
_FIXTURES = (
    "jp_argv",
    "jp_auth_header",
    "jp_base_url",
    "jp_configurable_serverapp",
    "jp_fetch",
    "jp_http_port",
    "jp_logging_stream",
    "jp_nbconvert_templates",
    "jp_root_dir",
    "jp_server_cleanup",
    "jp_serverapp",
    "jp_web_app",
    "jp_ws_fetch",
    "http_server",
    "http_server_client",
    "http_server_port",
    "io_loop",
)
for _plugin in (_server_plugin, _tornasync_plugin):
    globals().update({k: v for k, v in vars(_plugin).items() if k in _FIXTURES})


class DenyAll(Authorizer):
    """Refuses everything."""

    def is_authorized(self, handler, user, action, resource):
        return False


class ReadOnly(Authorizer):
    """Allows reading only."""

    def is_authorized(self, handler, user, action, resource):
        return action == "read"


@pytest.fixture
def mas_config(tmp_path):
    """Extra configuration a test may add to (ServerApp, MASManager, MASExtensionApp...)."""
    return {}


@pytest.fixture
def deny_all(mas_config):
    """Run the server with an authorizer that refuses everything."""
    mas_config["ServerApp"] = {"authorizer_class": DenyAll}


@pytest.fixture
def read_only(mas_config):
    """Run the server with an authorizer that allows only reading."""
    mas_config["ServerApp"] = {"authorizer_class": ReadOnly}


@pytest.fixture
def jp_server_config(tmp_path, mas_config):
    """The server runs mas_jupyter (and Jupyter's terminals, for comparisons)."""
    config = {
        "ServerApp": {
            "jpserver_extensions": {"mas_jupyter": True, "jupyter_server_terminals": True},
            "reraise_server_extension_failures": True,
        },
        "MASManager": {"tmux_socket": str(tmp_path / "tmux.sock")},
    }
    for section, values in mas_config.items():
        config.setdefault(section, {}).update(values)
    return Config(config)


@pytest.fixture
def mas_app(jp_serverapp):
    """The running extension app."""
    return jp_serverapp.extension_manager.extension_apps["mas_jupyter"].copy().pop()


@pytest.fixture
def api(jp_fetch):
    """Call /api/mas: returns (status, parsed body or None); never raises on HTTP errors."""

    async def call(method, *path, body=None, params=None, raw=None, headers=None):
        kwargs = {"method": method, "headers": headers or {}, "params": params}
        if raw is not None:
            kwargs["body"] = raw
        elif body is not None:
            kwargs["body"] = json.dumps(body)
        elif method in ("POST", "PATCH", "PUT"):
            kwargs["body"] = ""
        try:
            r = await jp_fetch("api", "mas", *path, **kwargs, allow_nonstandard_methods=True)
        except HTTPClientError as e:
            r = e.response
            if r is None:
                raise
        try:
            data = json.loads(r.body) if r.body else None
        except ValueError:
            data = r.body.decode(errors="replace")
        call.seen.append((method, path, r.code, data))
        check_response(method, path, r.code, data)
        return r.code, data

    call.seen = []
    return call


def _pointer(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


@functools.lru_cache(maxsize=1)
def _openapi_registry():
    doc = openapi_document()
    resource = Resource.from_contents(doc, default_specification=DRAFT202012)
    return doc, Registry().with_resource(OPENAPI_URI, resource)


def check_response(method: str, path: tuple, status: int, body: object) -> None:
    """Fail unless a response of a documented operation conforms to the OpenAPI document."""
    doc, registry = _openapi_registry()
    parts = [str(p) for p in path]
    for template in doc["paths"]:
        names = template.strip("/").split("/")
        if len(names) == len(parts) and all(
            n.startswith("{") or n == p for n, p in zip(names, parts, strict=True)
        ):
            break
    else:
        return
    operation = doc["paths"][template].get(method.lower())
    if operation is None:
        return
    key = str(status) if str(status) in operation["responses"] else "default"
    assert key in operation["responses"], f"{method} {template}: {status} is not documented"
    ptr = ["paths", template, method.lower(), "responses", key]
    response = operation["responses"][key]
    if "$ref" in response:
        ptr = response["$ref"].lstrip("#/").split("/")
        response = doc["components"]["responses"][ptr[-1]]
    if "content" not in response:
        assert body is None, f"{method} {template}: {status} should have no body"
        return
    ref = f"{OPENAPI_URI}#/{_pointer(*ptr, 'content', 'application/json', 'schema')}"
    validator = Draft202012Validator({"$ref": ref}, registry=registry)
    errors = sorted(validator.iter_errors(body), key=lambda e: e.path)
    assert not errors, (
        f"{method} {template} {status}: {errors[0].message} at {list(errors[0].path)}"
    )


@pytest.fixture
def server_repo(jp_root_dir):
    """A git repository with one commit inside the server's root."""
    path = jp_root_dir / "repo"
    path.mkdir()
    env = {**os.environ, **GIT_ENV}

    def git(*args):
        subprocess.run(["git", *args], cwd=path, env=env, check=True, capture_output=True)

    git("init", "-q", "-b", "main")
    (path / "data.csv").write_text("a,b\n1,2\n")
    git("add", "data.csv")
    git("commit", "-q", "-m", "first")
    return path


@pytest.fixture
def until():
    """until(predicate, timeout, what): poll a (possibly async) predicate, bounded."""
    return wait_until


@pytest.fixture
def shell_session(api):
    """Create session "s" with a terminal worker "sh"; returns (session, worker)."""

    async def make(**worker):
        code, s = await api("POST", "sessions", body={"name": "s"})
        assert code == 201, s
        code, w = await api(
            "POST", "sessions", "s", "workers", body={"name": "sh", "kind": "terminal", **worker}
        )
        assert code == 201, w
        return s, w

    return make


@pytest.fixture
def demo_session(api):
    """Create session "s" with a demo agent "bot" that is idle; returns (session, worker)."""

    async def make():
        code, s = await api("POST", "sessions", body={"name": "s"})
        assert code == 201, s
        spec = {"name": "bot", "kind": "agent", "backend": "demo", "env": DEMO_ENV}
        code, w = await api("POST", "sessions", "s", "workers", body=spec)
        assert code == 201, w

        async def idle():
            return (await api("GET", "sessions", "s", "workers", "bot"))[1]["activity"] == "idle"

        await wait_until(idle, what="the demo agent at its prompt")
        return s, w

    return make


DEMO_ENV = {"MAS_DEMO_DELAY": "0.3"}
