"""A local stand-in for the Hugging Face Hub's download endpoints, for tests.

It answers the real ``huggingface_hub`` client (``hf_hub_download``,
``get_hf_file_metadata``) pointed at it through ``endpoint=`` or ``HF_ENDPOINT``:

- ``HEAD``/``GET /{org}/{name}/resolve/{revision}/{path}`` (model repos) and
  ``/datasets/{org}/{name}/resolve/{revision}/{path}`` (dataset repos);
- ``revision`` is ``main`` or the repo's commit (:attr:`FakeHub.commit`);
- headers as the Hub sends them: ``X-Repo-Commit``, ``ETag`` (the sha256 for files
  served as LFS, the git blob id for the others), ``X-Linked-Etag`` and ``X-Linked-Size``
  for LFS files, ``Content-Length``, ``Accept-Ranges``; no Xet headers, so the client
  takes its plain HTTP path;
- ``Range: bytes=N-`` requests are answered with 206 (the client resumes with them);
- errors with the Hub's ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``,
  ``EntryNotFound``).

Every request is recorded in :attr:`FakeHub.requests`. ``add_file(..., delay=s)`` makes each
GET of a file wait ``s`` seconds before its body, so that concurrent downloads overlap.
:meth:`FakeHub.cut_off` makes the next full downloads of a file stop half way (the server
announces the whole length and closes the connection after half of it; requests that try to
resume get 503), to test interrupted downloads. Use it as a context manager, with :func:`point_hub_client_at`::

    with FakeHub() as hub:
        point_hub_client_at(hub.endpoint, monkeypatch)
        hub.add_file("facefusion/models-3.0.0", "inswapper_128.onnx", data)
        ensure_model("inswapper_128", model_dir)
"""

from __future__ import annotations

import hashlib
import http.server
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from types import SimpleNamespace, TracebackType
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    import pytest

_RESOLVE = re.compile(r"^/(?:(?P<datasets>datasets)/)?(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<path>.+)$")
_RANGE = re.compile(r"^bytes=(\d+)-$")


@dataclass
class HubFile:
    data: bytes
    lfs: bool = True  # big files are served from LFS on the Hub: their ETag is the sha256
    announced_etag: str | None = None  # send this ETag instead of the true one (a lying mirror)
    delay: float = 0.0  # seconds to wait before sending the body of a GET (a slow link)

    @property
    def etag(self) -> str:
        if self.announced_etag is not None:
            return self.announced_etag
        if self.lfs:
            return hashlib.sha256(self.data).hexdigest()
        return hashlib.sha1(b"blob %d\0" % len(self.data) + self.data, usedforsecurity=False).hexdigest()


@dataclass
class Request:
    method: str
    path: str
    range: str | None
    status: int = 0


@dataclass
class FakeHub:
    """The fake Hub: its files, its commit, and what it was asked for."""

    commit: str = field(default_factory=lambda: secrets.token_hex(20))
    files: dict[tuple[str, str, str], HubFile] = field(default_factory=dict)  # (repo type, repo id, path)
    requests: list[Request] = field(default_factory=list)
    cut_off_files: set[tuple[str, str, str]] = field(default_factory=set)
    _server: http.server.ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- content -----------------------------------------------------------------------------

    def add_file(
        self,
        repo_id: str,
        path: str,
        data: bytes,
        *,
        repo_type: str = "model",
        lfs: bool = True,
        announced_etag: str | None = None,
        delay: float = 0.0,
    ) -> HubFile:
        hub_file = HubFile(data, lfs, announced_etag, delay)
        self.files[(repo_type, repo_id, path)] = hub_file
        return hub_file

    def cut_off(self, repo_id: str, path: str, *, repo_type: str = "model", enabled: bool = True) -> None:
        """Make downloads of this file stop half way (or, with ``enabled=False``, work again)."""
        key = (repo_type, repo_id, path)
        if enabled:
            self.cut_off_files.add(key)
        else:
            self.cut_off_files.discard(key)

    # --- inspection --------------------------------------------------------------------------

    def count(self, method: str | None = None, path_contains: str = "") -> int:
        with self._lock:
            return sum(
                1
                for request in self.requests
                if (method is None or request.method == method) and path_contains in request.path
            )

    def reset_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    # --- lifetime ----------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        if self._server is None:
            raise RuntimeError("the fake Hub is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            fake_hub = hub

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-hub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


class _Handler(http.server.BaseHTTPRequestHandler):
    fake_hub: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def _record(self, status: int) -> None:
        hub = self.fake_hub
        with hub._lock:
            hub.requests.append(
                Request(self.command, unquote(urlsplit(self.path).path), self.headers.get("Range"), status)
            )

    def _error(self, status: int, code: str, message: str, *, commit: bool = False) -> None:
        self._record(status)
        body = f'{{"error": "{message}"}}'.encode()
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        if commit:
            self.send_header("X-Repo-Commit", self.fake_hub.commit)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _answer(self, *, send_body: bool) -> None:
        hub = self.fake_hub
        match = _RESOLVE.match(unquote(urlsplit(self.path).path))
        if match is None:
            self._error(404, "EntryNotFound", "not a resolve URL")
            return
        repo_type = "dataset" if match["datasets"] else "model"
        repo_id, revision, path = match["repo"], match["revision"], match["path"]
        if not any(key[0] == repo_type and key[1] == repo_id for key in hub.files):
            self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
            return
        if revision not in ("main", hub.commit):
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return
        hub_file = hub.files.get((repo_type, repo_id, path))
        if hub_file is None:
            self._error(404, "EntryNotFound", f"{path} does not exist at {revision}", commit=True)
            return
        data = hub_file.data
        cut_off = (repo_type, repo_id, path) in hub.cut_off_files
        requested_range = self.headers.get("Range")
        start = 0
        if requested_range is not None and send_body:
            range_match = _RANGE.match(requested_range)
            if cut_off or range_match is None:
                self._error(503, "ServiceUnavailable", "the fake Hub refuses to resume this file")
                return
            start = int(range_match.group(1))
        status = 206 if start else 200
        self._record(status)
        self.send_response(status)
        self.send_header("X-Repo-Commit", hub.commit)
        self.send_header("ETag", f'"{hub_file.etag}"')
        if hub_file.lfs:
            self.send_header("X-Linked-Etag", f'"{hub_file.etag}"')
            self.send_header("X-Linked-Size", str(len(data)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data) - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        if cut_off and send_body:
            self.send_header("Connection", "close")
        self.end_headers()
        if not send_body:
            return
        time.sleep(hub_file.delay)
        if cut_off:
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(data[start:])


def point_hub_client_at(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Send every request of huggingface_hub (and FaceMagic's downloads) to ``endpoint``, online, without pauses.

    FaceMagic reads HF_ENDPOINT at each call; huggingface_hub read it once, at import, into
    ``constants.ENDPOINT``, which it still uses for side requests (its agent-harness
    registry), so that is patched too. huggingface_hub pauses 1 s before it resumes a
    broken download: only its own ``time.sleep`` is replaced.
    """
    from huggingface_hub import constants, file_download

    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(file_download, "time", SimpleNamespace(sleep=lambda seconds: None))
