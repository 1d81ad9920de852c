"""Finding the Jupyter server to talk to, in the documented order (see docs/client.md).

1. an explicit URL (and token) given to `connect()`;
2. the environment: `MAS_SERVER_URL`/`MAS_TOKEN`, else `JUPYTER_SERVER_URL`/`JUPYTER_TOKEN`;
3. the server that started this kernel: the one whose /api/kernels lists this kernel's id
   (taken from the kernel's connection file);
4. the running server whose root_dir contains the working directory (the deepest one);
5. none: the caller runs the engine in-process.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from .errors import ConnectionFailed

PROBE_TIMEOUT = 3.0
_KERNEL_FILE_RE = re.compile(r"kernel-([0-9A-Za-z_.-]+)\.json$")
# The first path segment of a page of Jupyter's, after the server's base URL.
PAGES = ("lab", "tree", "notebooks", "doc", "edit")


@dataclass
class Found:
    """A server to use, and how it was found."""

    url: str
    token: str | None
    how: str


def from_here(path: str | None) -> str | None:
    """A path as the user typed it where they are (a shell's or a notebook's folder), for the
    server: `.`, `../repo`, `data` and `~/x` made absolute against the working directory.

    The server reads a relative path from its root_dir; the CLI and the magics are used from a
    folder, and `--repo .` means that folder. The Python client passes paths on as given.
    """
    if not path:
        return path
    return os.path.abspath(os.path.expanduser(path))


def server_url(url: str) -> tuple[str, str | None]:
    """The server's base URL and the token in it, from a URL as Jupyter prints it or a
    browser shows it: `http://host:8888/lab?token=abc` is `("http://host:8888/", "abc")`,
    `https://hub/user/me/lab/tree/x.ipynb` is `("https://hub/user/me/", None)`, and
    `localhost:8888` is `("http://localhost:8888/", None)`. Another scheme (`ftp://...`)
    is a ConnectionFailed: a Jupyter server is reached over http or https only.

    The query and fragment go; so does the path from its first segment that names one of
    Jupyter's pages (`PAGES`), so a server whose base URL has such a segment must be given
    without the page.
    """
    url = url.strip()
    if "://" not in url:  # "localhost:8888"
        url = "http://" + url
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 (a port that is not a number raises here)
    except ValueError as e:  # "http://[::1:8888/": Invalid IPv6 URL
        raise ConnectionFailed(f"cannot read the server's URL: {e}") from None
    if parts.scheme not in ("http", "https"):
        scheme = url.partition("://")[0]  # not the rest: it may hold credentials
        raise ConnectionFailed(
            f"a Jupyter server's URL starts with http:// or https://, not {scheme}://"
        )
    token = urllib.parse.parse_qs(parts.query).get("token", [None])[0] or None
    segments = parts.path.split("/")
    for i, segment in enumerate(segments):
        if segment in PAGES:
            segments = segments[:i] + [""]
            break
    path = "/".join(segments)
    if not path.endswith("/"):
        path += "/"
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", "")), token


def from_environment() -> Found | None:
    """The server named by the environment."""
    for url_var, token_var in (("MAS_SERVER_URL", "MAS_TOKEN"), ("JUPYTER_SERVER_URL", None)):
        url = os.environ.get(url_var)
        if url:
            url, token = server_url(url)
            token = (os.environ.get(token_var) if token_var else None) or token
            if token is None:
                token = os.environ.get("MAS_TOKEN") or os.environ.get("JUPYTER_TOKEN")
            return Found(url, token, f"environment ({url_var})")
    return None


def running_servers() -> list[dict]:
    """The Jupyter servers of this user that are running (from their runtime files)."""
    try:
        from jupyter_server.serverapp import list_running_servers
    except ImportError:  # pragma: no cover - jupyter_server is a dependency
        return []
    try:
        return list(list_running_servers())
    except OSError:
        return []


def this_kernel_id() -> str | None:
    """This kernel's id, when the code runs in a kernel whose connection file names it."""
    try:
        from ipykernel import get_connection_file

        path = get_connection_file()
    except Exception:  # not in a kernel (plain Python, IPython terminal)
        return None
    match = _KERNEL_FILE_RE.search(os.path.basename(path))
    return match.group(1) if match else None


def _get_json(server: dict, path: str) -> object:
    url = server["url"].rstrip("/") + "/" + path
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    if server.get("token"):
        request.add_header("Authorization", f"token {server['token']}")
    with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT) as response:
        return json.loads(response.read().decode("utf-8"))


def server_of_kernel(kernel_id: str, servers: list[dict]) -> dict | None:
    """The running server that lists this kernel among its kernels."""
    for server in servers:
        try:
            kernels = _get_json(server, "api/kernels")
        except (OSError, ValueError, urllib.error.URLError):
            continue
        if isinstance(kernels, list) and any(
            isinstance(k, dict) and k.get("id") == kernel_id for k in kernels
        ):
            return server
    return None


def server_of_directory(path: str, servers: list[dict]) -> dict | None:
    """The running server whose root_dir contains `path` (the deepest root wins)."""
    real = os.path.realpath(path)
    best, depth = None, -1
    for server in servers:
        root = server.get("root_dir") or server.get("notebook_dir")
        if not root:
            continue
        root = os.path.realpath(os.path.expanduser(root))
        try:
            inside = os.path.commonpath([real, root]) == root
        except ValueError:
            continue
        if inside and len(root) > depth:
            best, depth = server, len(root)
    return best


def discover(url: str | None = None, token: str | None = None) -> Found | None:
    """The server to use, or None when the engine should run in-process."""
    if url:
        url, in_url = server_url(url)
        env = from_environment()
        if token is None:
            token = in_url
        if token is None and env is not None:
            token = env.token
        return Found(url, token, "explicit")
    found = from_environment()
    if found is not None:
        if token is not None:
            found.token = token
        return found
    servers = running_servers()
    if not servers:
        return None
    kernel_id = this_kernel_id()
    if kernel_id:
        server = server_of_kernel(kernel_id, servers)
        if server is not None:
            return Found(server["url"], token or server.get("token"), "the kernel's server")
    server = server_of_directory(os.getcwd(), servers)
    if server is not None:
        return Found(server["url"], token or server.get("token"), "the server of this directory")
    return None
