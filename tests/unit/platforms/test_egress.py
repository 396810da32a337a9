"""The egress policy: inline destinations refused at submit (any spelling) and at connect time, redirects, size."""

from __future__ import annotations

import http.server
import ipaddress
import logging
import socket
import threading
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
from flask.testing import FlaskClient

from collector import egress
from collector.app import create_app
from collector.config import Config
from collector.errors import ConfigError, EgressError
from collector.http_client import HttpClient
from collector.specs.registry import Registry
from platforms.csv_source import CsvSource
from platforms.http_json import HttpJson
from tests.local_server import LocalServer, json_answer
from tests.unit.conftest import SECRET_KEY as KEY

METADATA_SPELLINGS = [
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "http://2852039166/",                       # decimal
    "http://0xa9fea9fe/",                       # hex
    "http://0251.0376.0251.0376/",              # octal
    "http://169.254.43518/",                    # short form
    "http://[::ffff:169.254.169.254]/",         # IPv4-mapped IPv6
    "http://[::ffff:a9fe:a9fe]/",
    "http://[64:ff9b::a9fe:a9fe]/",             # NAT64 well-known prefix
    "http://[2002:a9fe:a9fe::1]/",              # 6to4
]
INTERNAL = [
    "http://127.0.0.1:6379/",                   # the Redis port
    "http://127.1/", "http://0x7f000001/", "http://2130706433/", "http://[::1]/", "http://0.0.0.0/", "http://0/",
    "http://[::]/", "http://10.0.0.5/", "http://172.16.3.4/", "http://192.168.1.1/", "http://100.64.0.1/",
    "http://[fc00::1]/", "http://[fe80::1]/", "http://224.0.0.1/", "http://[::127.0.0.1]/",
]


class LoggingOnly:
    """The part of the run context reading a CSV uses."""

    log = logging.getLogger("tests.egress")


def submit(client: FlaskClient, platform_id: str, settings: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    response = client.post("/execution/run", json={"platform_id": platform_id, "settings": settings})
    return response.status_code, response.get_json()


@pytest.mark.parametrize("url", METADATA_SPELLINGS + INTERNAL)
def test_http_json_refuses_internal_addresses_in_any_spelling_at_submit(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis, url: str
) -> None:
    status, body = submit(client, "http_json", {"url": url})
    assert status == 422, body
    assert list(body["details"]) == ["settings.url"]
    message = body["details"]["settings.url"][0]
    assert "COLLECTOR_EGRESS_ALLOW" in message and "jobs may not connect" in message
    assert fake_redis.dbsize() == 0


@pytest.mark.parametrize("url", ["http://2852039166/data.csv", "http://[::ffff:169.254.169.254]/x.csv",
                                 "http://127.0.0.1:6379/", "http://192.168.0.1/export.csv"])
def test_csv_source_refuses_internal_addresses_at_submit(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis, url: str
) -> None:
    status, body = submit(client, "csv_source", {"url": url})
    assert status == 422 and list(body["details"]) == ["settings.url"], body
    assert fake_redis.dbsize() == 0


def test_other_schemes_are_refused_under_the_field(client: FlaskClient) -> None:
    for url in ("file:///proc/self/environ", "ftp://example.com/x", "gopher://127.0.0.1:6379/_PING"):
        status, body = submit(client, "http_json", {"url": url})
        assert status == 422 and "http:// or https://" in body["details"]["settings.url"][0], body


def test_the_allow_list_opens_hosts_and_networks(fake_redis: fakeredis.FakeRedis, registry: Registry) -> None:
    config = Config(secret_key=KEY, egress_allow="127.0.0.1, 10.0.0.0/8, Metadata.Internal")
    client = create_app(config, connection=fake_redis, registry=registry, dashboard=False).test_client()
    for url in ("http://127.0.0.1:8080/x", "http://10.20.30.40/x", "http://metadata.internal/x",
                "http://[::ffff:10.1.1.1]/x", "https://api.example.com/v1"):
        status, body = submit(client, "http_json", {"url": url})
        assert status == 202, (url, body)
    for url in ("http://127.0.0.2/x", "http://192.168.1.1/x", "http://2852039166/"):
        status, body = submit(client, "http_json", {"url": url})
        assert status == 422, (url, body)


def test_a_bad_allow_list_entry_stops_the_service_at_start() -> None:
    with pytest.raises(ConfigError, match="COLLECTOR_EGRESS_ALLOW entry 'not a host!'"):
        egress.EgressPolicy.from_config(Config(egress_allow="10.0.0.0/8,not a host!"))
    assert Config.from_env({"COLLECTOR_EGRESS_ALLOW": "db.internal"}).egress_allow == "db.internal"
    from collector.pool.supervisor import Pool

    with pytest.raises(ConfigError, match="COLLECTOR_EGRESS_ALLOW"):
        Pool(Config(redis_url="redis://127.0.0.1:1/0", egress_allow="-nope-"))


def test_allow_list_entries_may_name_one_port() -> None:
    allow = egress.parse_allow("db.internal:5432, Api.Internal, 10.0.0.0/8:443, 10.9.9.9, [fd00::1]:5432, "
                               "[fd00::/16]:8443, fd01::/16, [fd02::1]")
    net = ipaddress.ip_network
    assert allow.allow_hosts == {"api.internal"} and allow.allow_host_ports == {("db.internal", 5432)}
    assert allow.allow_networks == (net("10.9.9.9/32"), net("fd01::/16"), net("fd02::1/128"))
    assert allow.allow_network_ports == ((net("10.0.0.0/8"), 443), (net("fd00::1/128"), 5432),
                                         (net("fd00::/16"), 8443))


@pytest.mark.parametrize(("entry", "message"), [
    ("db.internal:0", "the port must be a number from 1 to 65535"),
    ("db.internal:65536", "the port must be a number from 1 to 65535"),
    ("10.0.0.1:http", "the port must be a number from 1 to 65535"),
    ("[fd00::1]5432", r"write an IPv6 address or network with a port as \[address\]:port"),
    ("[fd00::1", r"write an IPv6 address or network with a port as \[address\]:port"),
    ("bad host!:80", "is neither a host name, an address nor a CIDR network, with or without a port"),
])
def test_a_bad_port_in_the_allow_list_stops_the_service_at_start(entry: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        egress.EgressPolicy.from_config(Config(egress_allow=entry))


def test_an_address_allowed_on_one_port_is_refused_on_the_others_at_submit(
    fake_redis: fakeredis.FakeRedis, registry: Registry
) -> None:
    config = Config(secret_key=KEY, egress_allow="127.0.0.1:8080, 10.0.0.0/8:443, metadata.internal:80")
    client = create_app(config, connection=fake_redis, registry=registry, dashboard=False).test_client()
    for url in ("http://127.0.0.1:8080/x", "https://10.1.2.3/x", "http://10.1.2.3:443/x", "http://metadata.internal/x"):
        status, body = submit(client, "http_json", {"url": url})
        assert status == 202, (url, body)
    for url, port in (("http://127.0.0.1:6379/", 6379), ("http://127.0.0.1/", 80), ("http://10.1.2.3/x", 80)):
        status, body = submit(client, "http_json", {"url": url})
        assert status == 422, (url, body)
        assert f"port {port}: loopback" in str(body) or f"port {port}: private" in str(body), body
        assert "8080" not in str(body) and "443" not in str(body), "a client is not told which ports are open"


def test_a_database_host_allowed_on_one_port_is_refused_on_the_others() -> None:
    from collector.errors import SettingError
    from collector.resources import databases

    with egress.installed(egress.EgressPolicy.from_config(Config(egress_allow="10.0.0.5:5432"))):
        assert databases.check_url("postgresql://u:p@10.0.0.5/db", setting="url").host == "10.0.0.5"
        assert databases.check_url("postgresql://u:p@10.0.0.5:5432/db", setting="url").port == 5432
        for url in ("postgresql://u:p@10.0.0.5:6432/db", "mysql://u:p@10.0.0.5/db"):
            with pytest.raises(SettingError, match=r"port (6432|3306): private"):
                databases.check_url(url, setting="url")


def test_a_name_allowed_on_one_port_reaches_that_port_only_at_connect_time(
    local_server: LocalServer, second_loopback_server: tuple[str, list[str]]
) -> None:
    local_server.route("/items", lambda seen, calls: json_answer([{"id": 1}]))
    port = local_server.httpd.server_address[1]
    other_url, other_hits = second_loopback_server
    other_port = int(other_url.rsplit(":", 1)[1])
    with egress.installed(egress.EgressPolicy.from_config(Config(egress_allow=f"localhost:{port}, 127.0.0.2:{port}"))):
        client = HttpClient(headers={}, secrets=[], max_retries=0)
        body, _ = client.request(f"http://localhost:{port}/items")
        assert body == b'[{"id": 1}]'
        with pytest.raises(EgressError, match=f"127.0.0.2 is 127.0.0.2 \\(loopback\\): jobs may not connect there "
                                              f"on port {other_port} ") as refused:
            client.request(f"{other_url}/x")
        assert str(port) not in refused.value.message
    assert other_hits == []


@pytest.mark.parametrize(("host", "expected"), [
    ("2852039166", "169.254.169.254"), ("0xa9fea9fe", "169.254.169.254"), ("0251.0376.0251.0376", "169.254.169.254"),
    ("127.1", "127.0.0.1"), ("0x7f.1", "127.0.0.1"), ("10.1", "10.0.0.1"), ("\uff11\uff12\uff17.0.0.1", "127.0.0.1"),
    ("[::ffff:169.254.169.254]", "::ffff:a9fe:a9fe"), ("fe80::1%eth0", "fe80::1"), ("10.0.0.1.", "10.0.0.1"),
])
def test_literal_addresses_are_read_as_the_resolver_reads_them(host: str, expected: str) -> None:
    assert egress.literal_address(host) == ipaddress.ip_address(expected)


@pytest.mark.parametrize("host", ["example.com", "1.2.3.4.5", "0x", "db-1.internal", "999.1.1.1"])
def test_names_are_not_literal_addresses(host: str) -> None:
    address = egress.literal_address(host)
    assert address is None or host == "0x", address


@pytest.mark.parametrize(("address", "refused"), [
    ("8.8.8.8", False), ("2606:4700::1111", False), ("::ffff:8.8.8.8", False), ("64:ff9b::808:808", False),
    ("169.254.169.254", True), ("::ffff:127.0.0.1", True), ("2002:c0a8:0101::", True), ("2001:0:4136::1", True),
    ("64:ff9b:1::a00:1", True), ("::8.8.8.8", True), ("198.18.0.1", True), ("255.255.255.255", True),
])
def test_refused_ranges(address: str, refused: bool) -> None:
    assert (egress.refusal(ipaddress.ip_address(address)) is not None) is refused


# -- at connect time


def test_a_name_that_resolves_to_loopback_is_refused_at_connect_time(local_server: LocalServer) -> None:
    local_server.route("/items", lambda seen, calls: json_answer([{"id": 1}]))
    port = local_server.httpd.server_address[1]
    with egress.installed(egress.EgressPolicy()):
        platform = HttpJson(url=f"http://localhost:{port}/items", max_retries=0)  # a name: accepted at submit
        with pytest.raises(EgressError, match="localhost resolves to"):
            platform.client.request(platform.url)
    assert local_server.requests == []
    with egress.installed(egress.EgressPolicy.from_config(Config(egress_allow="127.0.0.0/8,::1"))):
        allowed = HttpJson(url=f"http://localhost:{port}/items", max_retries=0)
        body, _ = allowed.client.request(allowed.url)
    assert body == b'[{"id": 1}]'


def test_the_address_checked_is_the_address_connected_to(
    local_server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name resolved once per connection: a second answer (DNS rebinding) cannot swap the checked address."""
    local_server.route("/x", lambda seen, calls: json_answer({"ok": True}))
    port = local_server.httpd.server_address[1]
    answers = iter(["127.0.0.1"] + ["127.0.0.3"] * 10)   # 127.0.0.3 is not on the allow-list
    lookups: list[str] = []
    real = socket.getaddrinfo

    def rebinding(host: str, *args: Any, **kwargs: Any) -> Any:
        if host != "rebind.test":
            return real(host, *args, **kwargs)
        lookups.append(host)
        return real(next(answers), *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    client = HttpClient(headers={}, secrets=[], max_retries=0)
    body, _ = client.request(f"http://rebind.test:{port}/x")
    assert body == b'{"ok": true}' and lookups == ["rebind.test"]
    with pytest.raises(EgressError, match=r"127\.0\.0\.3 \(loopback\)"):
        client.request(f"http://rebind.test:{port}/x")


@pytest.fixture
def second_loopback_server() -> Iterator[tuple[str, list[str]]]:
    """A server on 127.0.0.2 (loopback, but not on the allow-list of these tests); yields its base URL and hits."""
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.2", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.2:{server.server_address[1]}", hits
    server.shutdown()
    server.server_close()


def redirect(location: str) -> Any:
    return lambda seen, calls: (302, {"Location": location}, b"")


def test_a_redirect_to_a_refused_address_is_not_followed(
    local_server: LocalServer, second_loopback_server: tuple[str, list[str]]
) -> None:
    base, hits = second_loopback_server
    local_server.route("/go", redirect(f"{base}/secret"))
    with egress.installed(egress.EgressPolicy.from_config(Config(egress_allow="127.0.0.1/32"))):
        platform = HttpJson(url=local_server.url("/go"), max_retries=0)
        with pytest.raises(EgressError, match=r"127\.0\.0\.2 .*loopback"):
            platform.client.request(platform.url)
    assert hits == []


def test_a_refused_redirect_names_no_token(local_server: LocalServer) -> None:
    local_server.route("/go", redirect("ftp://127.0.0.1:1/x"))
    platform = HttpJson(url=local_server.url("/go"), token="tok-5e3c9b1d7a", token_param="access_token", max_retries=0)
    with pytest.raises(EgressError) as refused:
        list(platform._pages())
    assert "only http and https" in refused.value.message and "tok-5e3c9b1d7a" not in refused.value.message


@pytest.mark.parametrize("target", ["file:///proc/self/environ", "ftp://127.0.0.1:1/pub/x", "data:,hello"])
def test_a_redirect_to_another_scheme_is_refused(local_server: LocalServer, target: str) -> None:
    local_server.route("/go", redirect(target))
    client = HttpClient(headers={}, secrets=[], max_retries=0)
    with pytest.raises(EgressError, match="only http and https redirects are followed"):
        client.request(local_server.url("/go"))


def test_redirects_are_capped(local_server: LocalServer) -> None:
    for n in range(10):
        local_server.route(f"/r{n}", redirect(f"/r{n + 1}"))
    local_server.route("/r10", lambda seen, calls: json_answer({"end": True}))
    client = HttpClient(headers={}, secrets=[], max_retries=0)
    assert client.request(local_server.url("/r5"))[0] == b'{"end": true}'   # 5 redirects: followed
    with pytest.raises(EgressError, match="redirected more than 5 times"):
        client.request(local_server.url("/r0"))                              # 10: stopped after 5
    assert local_server.seen("/r6") == [] or len(local_server.seen("/r6")) == 1   # only from the first request


def test_a_response_over_the_cap_fails_clearly(local_server: LocalServer) -> None:
    local_server.route("/big", lambda seen, calls: (200, {"Content-Type": "text/csv"}, b"a,b\n" + b"1,2\n" * 500))
    with egress.installed(egress.EgressPolicy.from_config(Config(egress_allow="127.0.0.1", max_response_bytes=1000))):
        platform = CsvSource(url=local_server.url("/big"))
        with pytest.raises(EgressError, match=r"more than 1000 bytes.*COLLECTOR_MAX_RESPONSE_BYTES"):
            platform._read(LoggingOnly())
        small = HttpClient(headers={}, secrets=[], max_retries=0)
        local_server.route("/small", lambda seen, calls: (200, {}, b"x" * 1000))
        assert small.request(local_server.url("/small"))[0] == b"x" * 1000


def test_a_response_without_a_length_is_cut_at_the_cap() -> None:
    class Endless(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"   # no Content-Length: the body ends when the connection closes

        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            for _ in range(100):
                self.wfile.write(b"y" * 1000)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        with egress.installed(egress.EgressPolicy.from_config(Config(egress_allow="127.0.0.1",
                                                                     max_response_bytes=5000))):
            client = HttpClient(headers={}, secrets=[], max_retries=0)
            with pytest.raises(EgressError, match="more than 5000 bytes"):
                client.request(f"http://127.0.0.1:{server.server_address[1]}/")
    finally:
        server.shutdown()
        server.server_close()


def test_a_trusted_client_skips_the_address_check(local_server: LocalServer) -> None:
    local_server.route("/x", lambda seen, calls: json_answer({"ok": 1}))
    with egress.installed(egress.EgressPolicy()):
        with pytest.raises(EgressError):
            HttpClient(headers={}, secrets=[], max_retries=0).request(local_server.url("/x"))
        trusted = HttpClient(headers={}, secrets=[], max_retries=0, trusted=True)
        assert trusted.request(local_server.url("/x"))[0] == b'{"ok": 1}'


def test_a_job_is_refused_at_connect_time_and_not_retried(
    local_server: LocalServer, fake_redis: fakeredis.FakeRedis
) -> None:
    """The worker's runtime installs the policy from its config: without the allow-list, localhost is refused."""
    from collector.errors import JobFailedError
    from collector.run.runner import Runtime, execute
    from collector.submit.submitter import Submitter

    local_server.route("/items", lambda seen, calls: json_answer([{"id": 1}]))
    port = local_server.httpd.server_address[1]
    config = Config(secret_key=KEY)
    registry = Registry.discover("platforms")
    job_id = Submitter(connection=fake_redis, config=config, registry=registry).submit(
        {"platform_id": "http_json", "settings": {"url": f"http://localhost:{port}/items"}})["job_id"]
    runtime = Runtime(config, fake_redis, registry)
    with pytest.raises(JobFailedError):
        execute(job_id, runtime)
    record = runtime.store.view(job_id) or {}
    assert record["status"] == "failed" and record["error"]["type"] == "EgressError", record
    assert "COLLECTOR_EGRESS_ALLOW" in record["error"]["message"]
    assert local_server.requests == []
