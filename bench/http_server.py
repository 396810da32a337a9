"""The API's HTTP server under slow clients and under load: run `python bench/http_server.py`.

Measures, on a private redis-server, `collector serve` (waitress, the server `serve` and `up` run) next to
gunicorn with 2 gthread workers of 4 threads (what bench/run.py's end-to-end figure serves both APIs with):
  idle       latency of GET /system/alive, one request at a time
  slowloris  the same while N connections send their headers a byte at a time (each connection a byte every
             0.2 s), requests that got no answer within 10 s, the server's threads, and how many of the slow
             connections the server had closed 5 s after its header timeout
  load       requests/s of POST /execution/run (no workers: the jobs stay queued) from 8 client threads
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import procs as P
from collector.cli.embedded import EmbeddedRedis, free_port

HEADER_TIMEOUT_S = 5.0
SPEC = json.dumps({"platform_id": "demo", "settings": {"rows": 1}}).encode()


def request(port: int, method: str = "GET", path: str = "/system/alive", body: bytes | None = None,
            timeout_s: float = 10.0) -> float | None:
    """Seconds one request took on a new connection, or None when it got no answer within `timeout_s`."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        conn.getresponse().read()
        return time.perf_counter() - started
    except OSError:
        return None
    finally:
        conn.close()


class Slowloris:
    """`count` connections sending a request's headers a byte at a time, a byte per connection every 0.2 s."""

    HEAD = b"GET /system/alive HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"x" * 100_000

    def __init__(self, port: int, count: int) -> None:
        self.socks = []
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.send(self.HEAD[:1])
            sock.setblocking(False)
            self.socks.append(sock)
        self.closed: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._dribble, daemon=True)
        self._thread.start()

    def _dribble(self) -> None:
        offset = 1
        while not self._stop.wait(0.2):
            for index, sock in enumerate(self.socks):
                if index in self.closed:
                    continue
                try:
                    if sock.recv(1024) == b"":
                        self.closed.add(index)
                        continue
                except BlockingIOError:
                    pass
                except OSError:
                    self.closed.add(index)
                    continue
                with contextlib.suppress(OSError):
                    sock.send(self.HEAD[offset:offset + 1])
            offset += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for sock in self.socks:
            sock.close()


def threads_of(pids: list[int]) -> int:
    """Threads of the processes `pids` and their children (gunicorn's workers)."""
    total, todo, seen = 0, list(pids), set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        with contextlib.suppress(OSError):
            total += int(Path(f"/proc/{pid}/status").read_text().split("Threads:")[1].split()[0])
            for task in Path(f"/proc/{pid}/task").iterdir():
                with contextlib.suppress(OSError):
                    todo += [int(c) for c in (task / "children").read_text().split()]
    return total


def load(port: int, seconds: float, clients: int = 8) -> float:
    """Requests/s of POST /execution/run from `clients` threads, each on its own kept-alive connection."""
    done, stop = [0] * clients, time.monotonic() + seconds

    def client(index: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while time.monotonic() < stop:
            conn.request("POST", "/execution/run", body=SPEC, headers={"Content-Type": "application/json"})
            conn.getresponse().read()
            done[index] += 1
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / (time.monotonic() - started)


def wait_up(port: int) -> None:
    deadline = time.monotonic() + 60
    while request(port, timeout_s=1) is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server on {port} did not start; see {P.LOGS}")
        time.sleep(0.1)


def measure(name: str, command: list[str], port: int, url: str, args: argparse.Namespace) -> dict[str, object]:
    procs = P.Procs(f"http-{name.split()[0]}")
    env = P.env_for(url, COLLECTOR_HTTP_HEADER_TIMEOUT_S=str(HEADER_TIMEOUT_S))
    proc = procs.start(command, env)
    try:
        wait_up(port)
        idle = [t for t in (request(port) for _ in range(args.requests)) if t is not None]
        attack = Slowloris(port, args.slow)
        attacked_at = time.monotonic()
        try:
            time.sleep(1.0)
            under: list[float | None] = []
            while len(under) < args.requests and under[-3:] != [None] * 3:  # 3 unanswered in a row: enough
                under.append(request(port))
            threads = threads_of([proc.pid])
            time.sleep(max(0.0, attacked_at + HEADER_TIMEOUT_S + 5 - time.monotonic()))
            closed = len(attack.closed)
        finally:
            attack.close()
        answered = [t for t in under if t is not None]
        rate = load(port, args.load_s)
    finally:
        procs.stop()
    return {
        "idle": (statistics.median(idle) * 1000, max(idle) * 1000),
        "under": (statistics.median(answered) * 1000 if answered else None,
                  max(answered) * 1000 if answered else None),
        "asked": len(under), "unanswered": len(under) - len(answered), "threads": threads, "closed": closed,
        "rate": rate,
    }


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slow", type=int, default=300, help="slow connections")
    parser.add_argument("--requests", type=int, default=20, help="normal requests measured, idle and under attack")
    parser.add_argument("--load-s", type=float, default=10.0, help="seconds of load")
    args = parser.parse_args()
    bin_ = P.BIN
    with EmbeddedRedis() as server:
        port_a, port_b = free_port(), free_port()
        systems = {
            "collector serve (waitress)": ([str(bin_ / "collector"), "serve", "--port", str(port_a)], port_a),
            "gunicorn gthread 2x4": ([str(bin_ / "gunicorn"), "-k", "gthread", "-w", "2", "--threads", "4",
                                      "-b", f"127.0.0.1:{port_b}", "--log-level", "warning",
                                      "collector.app:create_app()"], port_b),
        }
        results = {name: measure(name, cmd, port, server.url, args) for name, (cmd, port) in systems.items()}
    print(f"{os.cpu_count()} cores, Python {sys.version.split()[0]}; {args.slow} slow connections, "
          f"header timeout {HEADER_TIMEOUT_S:g} s (collector)")
    print("| server | idle p50 / max ms | under slowloris p50 / max ms | unanswered (10 s) | threads | "
          "slow ones closed | POST /execution/run req/s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        idle, under = r["idle"], r["under"]
        print(f"| {name} | {ms(idle[0])} / {ms(idle[1])} | {ms(under[0])} / {ms(under[1])} | "  # type: ignore[index]
              f"{r['unanswered']} of {r['asked']} | {r['threads']} | {r['closed']} of {args.slow} | "
              f"{r['rate']:.0f} |")


if __name__ == "__main__":
    main()
