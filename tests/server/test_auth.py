"""Every route and both WebSockets: authentication, authorization ("mas"), origin, XSRF."""

from __future__ import annotations

import re
import urllib.parse

import pytest
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

from mas_jupyter.server.openapi import openapi_document

WRITE_METHODS = {"post", "patch", "delete", "put"}


def routes() -> list[tuple[str, str]]:
    """(METHOD, path) of every REST route, from the OpenAPI document."""
    out = []
    for path, item in openapi_document()["paths"].items():
        for method in item:
            if method in {"get", "post", "patch", "delete", "put"}:
                out.append((method.upper(), path))
    return out


def concrete(path: str) -> list[str]:
    return path.replace("{sid}", "s").replace("{wid}", "w").strip("/").split("/")


WEBSOCKETS = [
    ("sessions", "s", "workers", "w", "channel"),
    ("events",),
]


async def ws_status(jp_ws_fetch, *path, headers=None):
    """The HTTP status of a WebSocket upgrade attempt (101 when it opened)."""
    try:
        ws = await jp_ws_fetch("api", "mas", *path, headers=headers)
    except HTTPClientError as e:
        return e.code
    ws.close()
    return 101


@pytest.mark.parametrize("auth", ["", "token wrong-token"], ids=["no-token", "wrong-token"])
async def test_every_route_needs_authentication(api, jp_ws_fetch, auth):
    for method, path in routes():
        code, body = await api(method, *concrete(path), headers={"Authorization": auth})
        assert code == 403, (method, path, body)
        assert "Traceback" not in str(body)
    for path in WEBSOCKETS:
        assert await ws_status(jp_ws_fetch, *path, headers={"Authorization": auth}) == 403


async def test_deny_all_authorizer_refuses_everything(deny_all, api, jp_ws_fetch):
    for method, path in routes():
        code, body = await api(method, *concrete(path))
        assert code == 403, (method, path, body)
        assert "mas" in body["message"]
    for path in WEBSOCKETS:
        assert await ws_status(jp_ws_fetch, *path) == 403


async def test_read_only_authorizer_allows_reads_only(read_only, api, jp_ws_fetch, mas_app):
    await mas_app.manager.create_session({"name": "s"})
    for method, path in routes():
        code, body = await api(method, *concrete(path))
        if method.lower() in WRITE_METHODS:
            assert code == 403, (method, path, body)
        else:
            assert code != 403, (method, path, body)
    # The console can type into a worker: it needs "write". The event stream is a read.
    assert await ws_status(jp_ws_fetch, *WEBSOCKETS[0]) == 403
    assert await ws_status(jp_ws_fetch, *WEBSOCKETS[1]) == 101
    assert (await api("GET", "sessions", "s"))[0] == 200


async def test_foreign_origin_websockets_are_refused(
    cookie_login, http_server_client, jp_http_port, jp_base_url
):
    # A browser's cookie is what a foreign page could ride on; a token request is not checked.
    jar, xsrf = await cookie_login()
    host = f"127.0.0.1:{jp_http_port}"  # where the login cookie was set
    browser = {"Cookie": jar, "X-XSRFToken": xsrf}

    async def status(path, origin):
        url = f"ws://{host}{jp_base_url}api/mas/{'/'.join(path)}"
        try:
            ws = await websocket_connect(HTTPRequest(url, headers={**browser, "Origin": origin}))
        except HTTPClientError as e:
            return e.code
        ws.close()
        return 101

    for path in WEBSOCKETS:
        assert await status(path, "http://evil.example") == 403
        assert await status(path, f"http://{host}.evil.example") == 403
    assert await status(("events",), f"http://{host}") == 101


async def test_unknown_worker_channel_is_404_before_the_upgrade(jp_ws_fetch, mas_app):
    if not hasattr(mas_app.manager, "get_worker"):
        pytest.skip("the worker side of the engine has not landed yet")
    assert await ws_status(jp_ws_fetch, *WEBSOCKETS[0]) == 404
    await mas_app.manager.create_session({"name": "s"})
    assert await ws_status(jp_ws_fetch, *WEBSOCKETS[0]) == 404


@pytest.fixture
def cookie_login(http_server_client, jp_serverapp, jp_base_url):
    """Log in with the token as a browser does: returns (Cookie header, xsrf token)."""

    async def login():
        r = await _fetch(http_server_client, jp_base_url, "login")
        cookies = dict(_cookies(r))
        xsrf = cookies["_xsrf"]
        token = jp_serverapp.identity_provider.token
        form = urllib.parse.urlencode({"_xsrf": xsrf, "password": token})
        r = await _fetch(
            http_server_client,
            jp_base_url,
            "login",
            method="POST",
            body=form,
            headers={"Cookie": _jar(cookies)},
        )
        assert r.code == 302
        cookies.update(_cookies(r))
        return _jar(cookies), xsrf

    return login


async def _fetch(client, base_url, path, **kwargs):
    kwargs.setdefault("follow_redirects", False)
    kwargs.setdefault("raise_error", False)
    return await client.fetch(base_url + path, **kwargs)


async def test_cookie_login_needs_xsrf_for_state_changes(
    cookie_login, http_server_client, jp_base_url
):
    jar, xsrf = await cookie_login()
    cookie = {"Cookie": jar}

    async def fetch(path, **kwargs):
        return await _fetch(http_server_client, jp_base_url, path, **kwargs)

    r = await fetch("api/mas/sessions", headers=cookie)
    assert r.code == 200
    r = await fetch("api/mas/sessions", method="POST", body="{}", headers=cookie)
    assert r.code == 403
    r = await fetch(
        "api/mas/sessions", method="POST", body="{}", headers={**cookie, "X-XSRFToken": xsrf}
    )
    assert r.code == 201


def _cookies(response) -> list[tuple[str, str]]:
    found = []
    for header in response.headers.get_list("Set-Cookie"):
        m = re.match(r"([^=]+)=([^;]*)", header)
        if m:
            found.append((m.group(1), m.group(2)))
    return found


def _jar(cookies: dict) -> str:
    return "; ".join(f"{k}={v}" for k, v in cookies.items())
