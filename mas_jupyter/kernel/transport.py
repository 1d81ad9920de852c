"""How the client reaches the engine: over HTTP to a Jupyter server, or in-process.

Both transports offer one coroutine, `call(op, *args, **kwargs)`, where `op` is the name of a
`MASManager` method and the arguments are that method's: the client is written against the
engine's own API, so the two paths cannot drift apart. The answer is the API's JSON, except
for delete_session: the rescue ref the API names in a header (None when nothing was saved).
Errors become `MASClientError`s.
"""

from __future__ import annotations

import asyncio
import io
import json
import ssl
import urllib.parse
from typing import Any

from tornado.http1connection import HTTP1Connection, HTTP1ConnectionParameters
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest, HTTPResponse
from tornado.httputil import (
    HTTPHeaders,
    HTTPMessageDelegate,
    RequestStartLine,
    ResponseStartLine,
)
from tornado.iostream import StreamClosedError
from tornado.tcpclient import TCPClient
from tornado.websocket import WebSocketClientConnection, websocket_connect

from .errors import ConnectionFailed, MASClientError, error_from

DEFAULT_TIMEOUT = 60.0
DEFAULT_SEND_TIMEOUT = 600.0  # the server's, for a waited send without a timeout
RESCUE_HEADER = "X-MAS-Rescue-Ref"  # a forced purge's answer: where a worktree's changes went


def _q(part: str) -> str:
    if not isinstance(part, str) or not part:
        raise MASClientError("a session or worker id or name is required", reason="invalid")
    return urllib.parse.quote(part, safe="")


def _is_mas_error(body: object) -> bool:
    """Whether an error answer is mas_jupyter's (or Jupyter's API's) JSON: an object with a
    `message`. Jupyter's HTML pages, a proxy's text, an empty body are not."""
    return isinstance(body, dict) and isinstance(body.get("message"), str)


def _shown_url(url: str) -> str:
    """The server's URL as an error message shows it: no credentials, query or fragment."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _query(**params: Any) -> dict[str, str]:
    out = {}
    for key, value in params.items():
        if value is None:
            continue
        out[key] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return out


class ConnectionLost(ConnectionResetError):
    """The server was reached and took the request, then closed the connection before its
    answer (it stopped, or was killed, meanwhile)."""


class _Answer(HTTPMessageDelegate):
    """Collects one HTTP response (status line, headers, body)."""

    def __init__(self) -> None:
        self.start: ResponseStartLine | None = None
        self.headers = HTTPHeaders()
        self.chunks: list[bytes] = []

    def headers_received(self, start_line, headers) -> None:  # type: ignore[override]
        self.start, self.headers = start_line, headers

    def data_received(self, chunk: bytes) -> None:  # type: ignore[override]
        self.chunks.append(chunk)


async def fetch_closing(request: HTTPRequest) -> HTTPResponse:
    """Fetch on a connection of its own that closes when the caller is cancelled.

    Tornado's client goes on with a request whose caller was cancelled (tornado#157). For a
    send that waits for the agent's turn, giving up (Ctrl-C, the kernel's stop button) must
    close the connection: that is how the server knows to drop the message instead of typing
    it later. Answers as tornado's `fetch(request, raise_error=False)` does: a response, 599
    "Timeout" when the connection or the answer does not come in time; raises OSError when
    the server cannot be reached or closes without an answer.
    """
    try:
        return await _fetch_closing(request)
    except (TimeoutError, asyncio.TimeoutError):  # one class from Python 3.11 on
        return HTTPResponse(request, 599, error=HTTPClientError(599, "Timeout"))


async def _fetch_closing(request: HTTPRequest) -> HTTPResponse:
    url = urllib.parse.urlsplit(request.url)
    tls = url.scheme == "https"
    stream = await TCPClient().connect(
        url.hostname or "localhost",
        url.port or (443 if tls else 80),
        ssl_options=ssl.create_default_context() if tls else None,
        timeout=request.connect_timeout,
    )
    try:
        connection = HTTP1Connection(stream, True, HTTP1ConnectionParameters(decompress=True))
        body = request.body or b""
        headers = HTTPHeaders(request.headers)
        headers.update({"Host": url.netloc.rpartition("@")[2], "Connection": "close"})
        headers["Content-Length"] = str(len(body))
        target = url.path + (f"?{url.query}" if url.query else "")
        connection.write_headers(RequestStartLine(request.method, target, "HTTP/1.1"), headers)
        connection.write(body)
        connection.finish()
        answer = _Answer()
        await asyncio.wait_for(connection.read_response(answer), request.request_timeout)
    except StreamClosedError:
        raise ConnectionLost from None
    finally:
        stream.close()
    if answer.start is None:
        raise ConnectionLost
    return HTTPResponse(
        request,
        answer.start.code,
        headers=answer.headers,
        buffer=io.BytesIO(b"".join(answer.chunks)),
    )


class HTTPTransport:
    """The REST and WebSocket API under {url}api/mas, authenticated with a token."""

    kind = "http"
    # How to name the server and its token, in the messages that need it (the CLI's own
    # transport names its options instead).
    url_hint = "set MAS_SERVER_URL, or pass url= to mas_jupyter.connect"
    token_hint = "token=, MAS_TOKEN, or the token in the server's URL"

    def __init__(self, url: str, token: str | None) -> None:
        self.url = url if url.endswith("/") else url + "/"
        self.shown_url = _shown_url(self.url)  # in messages: no credentials, no token
        self.token = token or ""
        self._http: AsyncHTTPClient | None = None

    def __repr__(self) -> str:
        return f"HTTPTransport({self.shown_url!r})"

    @property
    def api(self) -> str:
        """The API's base URL."""
        return self.url + "api/mas/"

    def not_serving(self) -> ConnectionFailed:
        """The error for a server that answers, but not with the API: Jupyter's HTML 404
        (the extension is disabled, failed to import, or could not open its state), or
        another web server at that URL."""
        return ConnectionFailed(
            f"the Jupyter server at {self.shown_url} does not serve /api/mas: is the "
            "mas_jupyter extension enabled? (`jupyter server extension list`; if it is, the "
            "server's log says why in a line 'mas_jupyter is not serving /api/mas: ...')",
            status=404,
        )

    def error(self, status: int, body: object) -> MASClientError:
        """The exception for an error answer (`body` parsed JSON, or text)."""
        if status == 404 and not _is_mas_error(body):
            return self.not_serving()
        return error_from(status, body)

    def headers(self) -> dict[str, str]:
        """Headers every request carries (the token, never logged)."""
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"token {self.token}"
        return headers

    async def request(self, *args: Any, **kwargs: Any) -> Any:
        """One JSON request (`exchange`'s arguments); the parsed answer."""
        return (await self.exchange(*args, **kwargs))[0]

    async def exchange(
        self,
        method: str,
        path: str,
        params: dict | None = None,
        body: object = None,
        timeout: float = DEFAULT_TIMEOUT,
        closing: bool = False,
    ) -> tuple[Any, HTTPHeaders]:
        """One JSON request; the parsed answer and its headers, or the matching
        MASClientError. With `closing`, on a connection of its own that a cancelled caller
        closes (`fetch_closing`)."""
        if self._http is None:
            # Made on the loop that uses it (the client's private loop).
            self._http = AsyncHTTPClient(force_instance=True)
        url = self.api + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        headers = self.headers()
        data = None
        if method in ("POST", "PATCH", "PUT"):
            data = json.dumps(body if body is not None else {})
            headers["Content-Type"] = "application/json"
        request = HTTPRequest(
            url,
            method=method,
            headers=headers,
            body=data,
            connect_timeout=10,
            request_timeout=timeout,
            allow_nonstandard_methods=True,
        )
        try:
            if closing:
                response = await fetch_closing(request)
            else:
                response = await self._http.fetch(request, raise_error=False)
        except (ConnectionLost, HTTPClientError) as e:  # reached, then closed with no answer
            if isinstance(e, HTTPClientError) and "Timeout" in str(e):
                response = HTTPResponse(request, 599, error=e)  # said below
            else:
                raise ConnectionFailed(
                    f"lost the connection to the Jupyter server at {self.shown_url} before it "
                    f"answered {method} {path}: did it stop?",
                    lost=True,
                ) from None
        except OSError as e:
            raise ConnectionFailed(
                f"cannot reach the Jupyter server at {self.shown_url}: {e}; is it running? "
                f"({self.url_hint})"
            ) from None
        if response.code == 599:
            error = response.error
            if isinstance(error, HTTPClientError) and error.code == 599 and "Timeout" in str(error):
                raise ConnectionFailed(
                    f"the Jupyter server at {self.shown_url} did not answer {method} {path} within "
                    f"{timeout:g} s"
                )
            raise ConnectionFailed(
                f"cannot reach the Jupyter server at {self.shown_url}: {error}; is it running?"
            )
        if 300 <= response.code < 400:  # a redirect not followed (to a login page, say)
            raise self.not_serving()
        text = response.body.decode("utf-8", "replace") if response.body else ""
        try:
            parsed = json.loads(text) if text else None
        except ValueError:
            if response.code < 300:  # a page (Jupyter's, a proxy's), not an answer of the API
                raise self.not_serving() from None
            parsed = text
        if response.code >= 400:
            if response.code in (401, 403):
                message = parsed.get("message") if isinstance(parsed, dict) else None
                # Jupyter's own login check, not ours: the token is missing or wrong. (A state
                # change with a token it does not accept falls to the cookie's XSRF check.)
                if message in (None, "", "Forbidden", "Unauthorized") or "_xsrf" in message:
                    parsed = {
                        "message": f"the server at {self.shown_url} refused the request "
                        f"({response.code}): check the token ({self.token_hint})",
                        "reason": "forbidden",
                    }
            raise self.error(response.code, parsed)
        return parsed, response.headers

    async def websocket(self, path: str) -> WebSocketClientConnection:
        """Open a WebSocket under the API (the token in a header, never in the URL)."""
        url = "ws" + self.api[4:] + path if self.api.startswith("http") else self.api + path
        request = HTTPRequest(url, headers=self.headers(), connect_timeout=10)
        try:
            return await websocket_connect(request, max_message_size=64 * 1024 * 1024)
        except HTTPClientError as e:
            if e.code in (502, 503, 504, 599):  # closed before an answer, or a proxy's
                raise ConnectionFailed(
                    f"cannot reach the Jupyter server at {self.shown_url}: {e}; is it running?"
                ) from None
            body = e.response.body.decode("utf-8", "replace") if e.response is not None else ""
            try:
                parsed: object = json.loads(body) if body else None
            except ValueError:
                parsed = body
            raise self.error(e.code, parsed or {"message": str(e)}) from None
        except OSError as e:
            raise ConnectionFailed(
                f"cannot reach the Jupyter server at {self.shown_url}: {e}; is it running? "
                f"({self.url_hint})"
            ) from None

    async def call(self, op: str, *args: Any, **kwargs: Any) -> Any:
        """Call the engine operation `op` (a MASManager method name) over HTTP."""
        return await getattr(self, f"_{op}")(*args, **kwargs)

    def close(self) -> None:
        """Close the HTTP client."""
        if self._http is not None:
            self._http.close()
            self._http = None

    # The engine's operations, as routes (same names and arguments as MASManager's methods).

    async def _list_sessions(self, status=None, kind=None, task=None):
        return await self.request("GET", "sessions", _query(status=status, kind=kind, task=task))

    async def _create_session(self, spec):
        return await self.request("POST", "sessions", body=spec)

    async def _get_session(self, key):
        return await self.request("GET", f"sessions/{_q(key)}")

    async def _update_session(self, key, changes):
        return await self.request("PATCH", f"sessions/{_q(key)}", body=changes)

    async def _pause_session(self, key):
        return await self.request("POST", f"sessions/{_q(key)}/pause")

    async def _resume_session(self, key):
        return await self.request("POST", f"sessions/{_q(key)}/resume")

    async def _stop_session(self, key, force=False):
        return await self.request("POST", f"sessions/{_q(key)}/stop", body={"force": bool(force)})

    async def _delete_session(self, key, purge=False, force=False):
        params = _query(purge=bool(purge), force=bool(force))
        _, headers = await self.exchange("DELETE", f"sessions/{_q(key)}", params)
        return headers.get(RESCUE_HEADER) or None

    async def _connect_info(self, key):
        return await self.request("POST", f"sessions/{_q(key)}/connect")

    async def _list_activities(self, key, limit=None, since=None):
        params = _query(limit=limit, since=since)
        return await self.request("GET", f"sessions/{_q(key)}/activities", params)

    async def _list_workers(self, key):
        return await self.request("GET", f"sessions/{_q(key)}/workers")

    async def _create_worker(self, key, spec):
        return await self.request("POST", f"sessions/{_q(key)}/workers", body=spec)

    async def _get_worker(self, key, wkey):
        return await self.request("GET", f"sessions/{_q(key)}/workers/{_q(wkey)}")

    async def _delete_worker(self, key, wkey):
        await self.request("DELETE", f"sessions/{_q(key)}/workers/{_q(wkey)}")
        return None

    async def _write_input(self, key, wkey, data):
        path = f"sessions/{_q(key)}/workers/{_q(wkey)}/input"
        await self.request("POST", path, body={"data": data})
        return None

    async def _send_message(self, key, wkey, text, wait=False, timeout=None):
        body: dict = {"text": text, "wait": bool(wait)}
        if timeout is not None:
            body["timeout"] = timeout
        limit = (timeout or DEFAULT_SEND_TIMEOUT) + 30.0 if wait else DEFAULT_TIMEOUT
        path = f"sessions/{_q(key)}/workers/{_q(wkey)}/send"
        # A waited message may wait for the agent's turn: a caller that gives up closes the
        # connection, and the server then drops the message.
        try:
            return await self.request("POST", path, body=body, timeout=limit, closing=wait)
        except ConnectionFailed as e:
            if e.details.get("lost"):  # it had the message: it may have typed it
                e.message += (
                    " The message may have been typed: the worker's output says, once the "
                    "server runs again."
                )
            raise

    async def _get_screen(self, key, wkey):
        return await self.request("GET", f"sessions/{_q(key)}/workers/{_q(wkey)}/screen")

    async def _get_output(self, key, wkey, tail=None):
        path = f"sessions/{_q(key)}/workers/{_q(wkey)}/output"
        return await self.request("GET", path, _query(tail=tail))

    async def _get_transcript(self, key, wkey, offset=0, limit=500):
        path = f"sessions/{_q(key)}/workers/{_q(wkey)}/transcript"
        return await self.request("GET", path, _query(offset=offset, limit=limit))

    async def _resize_worker(self, key, wkey, cols, rows):
        path = f"sessions/{_q(key)}/workers/{_q(wkey)}/resize"
        return await self.request("POST", path, body={"cols": cols, "rows": rows})

    async def _restart_worker(self, key, wkey):
        return await self.request("POST", f"sessions/{_q(key)}/workers/{_q(wkey)}/restart")

    async def _list_backends(self):
        return await self.request("GET", "backends")

    async def _list_personas(self):
        return await self.request("GET", "personas")

    async def _list_templates(self):
        return await self.request("GET", "templates")
