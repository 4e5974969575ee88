"""Fixtures for the ``medclip serve`` tests: a case index over the tiny archive and real servers on free ports.

``serve_index`` builds the index once per session with the tiny checkpoint. ``live_server`` is a factory that runs
``python -m medclip.cli serve`` as a child process (its output captured in a file), waits for ``/api/health`` and
stops the process at the end of the session; calls with the same settings share one server, so a test module and
the browser tests do not pay for a second start-up.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

START_TIMEOUT_S = 90.0
REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the kernel's pick; a race with other processes is possible)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_env(token: str | None = None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The child's environment: offline, unbuffered, MEDCLIP_TOKEN only when given."""
    env = {k: v for k, v in os.environ.items() if k != "MEDCLIP_TOKEN"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    if token is not None:
        env["MEDCLIP_TOKEN"] = token
    env.update(extra or {})
    return env


def serve_command(checkpoint: str | Path, index: str | Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "medclip.cli", "serve", "--checkpoint", str(checkpoint), "--index", str(index), *args]


@dataclass
class LiveServer:
    """A running ``medclip serve`` child process."""

    process: subprocess.Popen
    port: int
    log_path: Path
    token: str | None = None
    host: str = "127.0.0.1"
    args: tuple[str, ...] = field(default_factory=tuple)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, path: str = "/") -> str:
        return self.base_url + path

    def output(self) -> str:
        """Everything the server wrote to stdout and stderr so far (start-up banner, logs, access log)."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def headers(self, token: str | None = None) -> dict[str, str]:
        """``Authorization: Bearer`` with ``token`` (default: the server's own; none when it has none)."""
        token = token if token is not None else self.token
        return {"Authorization": f"Bearer {token}"} if token else {}

    def client(self, *, auth: bool = True, timeout: float = 60.0, **kwargs) -> httpx.Client:
        """An httpx client on ``base_url``; with ``auth`` (and a token) every request carries the Bearer header."""
        headers = {**(self.headers() if auth else {}), **kwargs.pop("headers", {})}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout, **kwargs)

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        """Until ``/api/health`` answers 200; pytest.fail with the server's output when it exits or times out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                pytest.fail(
                    f"medclip serve exited with code {self.process.returncode} before answering /api/health:\n"
                    f"{self.output()}",
                    pytrace=False,
                )
            try:
                if httpx.get(self.url("/api/health"), timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        pytest.fail(f"medclip serve did not answer /api/health within {timeout:.0f} s:\n{self.output()}", pytrace=False)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (uvicorn's graceful shutdown), then SIGKILL after ``timeout`` s; the exit code."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        return self.process.returncode


@pytest.fixture(scope="session")
def serve_index(tiny_checkpoint, tiny_manifest, tiny_archive, tmp_path_factory) -> Path:
    """A case index of every tiny-archive image, built with ``tiny_checkpoint`` (labels from labels.csv)."""
    from medclip.config import IndexBuildCfg
    from medclip.eval.index import build_case_index

    out = tmp_path_factory.mktemp("serve_index")
    cfg = IndexBuildCfg(
        checkpoint=str(tiny_checkpoint),
        manifest=str(tiny_manifest),
        out_dir=str(out),
        labels=str(tiny_archive / "labels.csv"),
        allow_overlap=True,
    )
    build_case_index(cfg, show_progress=False)
    return out


class ServerFactory:
    """``live_server(token=None, args=(), env=None, shared=True, wait=True) -> LiveServer``.

    Starts ``python -m medclip.cli serve --checkpoint CKPT --index IDX --port FREE [args]`` with HF_HUB_OFFLINE=1
    and MEDCLIP_TOKEN=``token`` (when given), and waits for ``/api/health`` (90 s; the server's output in the
    failure). With ``shared`` a call with the same token, args and env returns the running server. ``wait=False``
    returns at once (call ``.wait_ready()``), so several servers can start side by side. ``command(*args)`` and
    ``env(token)`` give the command line and environment for a run of one's own (``subprocess.run``).
    """

    def __init__(self, checkpoint: Path, index: Path, logs: Path) -> None:
        self.checkpoint, self.index, self.logs = checkpoint, index, logs
        self.started: list[LiveServer] = []
        self._cache: dict[tuple, LiveServer] = {}

    def command(self, *args: str) -> list[str]:
        return serve_command(self.checkpoint, self.index, *args)

    def env(self, token: str | None = None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        return serve_env(token, extra)

    def __call__(
        self,
        token: str | None = None,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        *,
        shared: bool = True,
        wait: bool = True,
    ) -> LiveServer:
        key = (token, tuple(args), tuple(sorted((env or {}).items())))
        server = self._cache.get(key) if shared else None
        if server is None or not server.alive():
            port = free_port()
            log_path = self.logs / f"serve-{len(self.started):02d}-{port}.log"
            with open(log_path, "wb") as log:
                process = subprocess.Popen(
                    self.command("--port", str(port), *args),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=self.env(token, env),
                    cwd=REPO_ROOT,
                )
            server = LiveServer(process=process, port=port, log_path=log_path, token=token, args=tuple(args))
            self.started.append(server)
            if shared:
                self._cache[key] = server
        if wait:
            server.wait_ready()
        return server

    def stop_all(self) -> None:
        for server in self.started:
            server.stop()


@pytest.fixture(scope="session")
def live_server(tiny_checkpoint, serve_index, tmp_path_factory) -> Iterator[ServerFactory]:
    """Factory of ``medclip serve`` child processes over ``tiny_checkpoint`` + ``serve_index`` (see
    :class:`ServerFactory`); every server it started is stopped at the end of the session."""
    factory = ServerFactory(Path(tiny_checkpoint), Path(serve_index), tmp_path_factory.mktemp("serve_logs"))
    yield factory
    factory.stop_all()


@pytest.fixture(scope="session")
def serve_token() -> str:
    """A MEDCLIP_TOKEN for the guarded server (random per session, longer than the 16-character minimum)."""
    import secrets

    return "test-" + secrets.token_urlsafe(18)


@dataclass
class ServerPair:
    plain: LiveServer  # no token, the default upload limit
    guarded: LiveServer  # MEDCLIP_TOKEN=serve_token and --max-upload-mb 1


GUARDED_ARGS = ("--max-upload-mb", "1")


@pytest.fixture(scope="session")
def live_servers(live_server, serve_token) -> ServerPair:
    """The two servers the live and browser tests share, started side by side (one start-up's wait, not two)."""
    plain = live_server(wait=False)
    guarded = live_server(token=serve_token, args=GUARDED_ARGS, wait=False)
    plain.wait_ready()
    guarded.wait_ready()
    return ServerPair(plain=plain, guarded=guarded)
