"""The per-job scripts sent straight on a connection (`store/scripts.py`), against a real redis-server: the same
answers as redis-py's own Script call, a script the server forgot loaded again, words hiredis cannot pack refused
as redis-py refuses them, and a connection broken in flight never handed to the next command."""

from __future__ import annotations

import socket

import pytest
import redis
from redis.commands.core import Script

from collector.store import scripts

ECHO = Script(None, b"return {KEYS[1], ARGV[1], ARGV[2], ARGV[3], redis.call('INCR', KEYS[1])}")


def test_the_answer_is_redis_pys_own(redis_client: redis.Redis) -> None:
    words = [1.5, b"\x00\xffbytes", "text \u00e9"]
    ours = scripts.call(ECHO, keys=["counter"], args=words, client=redis_client)
    theirs = ECHO(keys=["counter"], args=words, client=redis_client)
    assert ours == [b"counter", b"1.5", b"\x00\xffbytes", "text \u00e9".encode(), 1]
    assert theirs[:4] == ours[:4] and theirs[4] == 2


def test_a_script_the_server_forgot_is_loaded_and_run_once(redis_client: redis.Redis) -> None:
    scripts.call(ECHO, keys=["counter"], args=[1, 2, 3], client=redis_client)
    redis_client.script_flush()  # as after a restart, or on a new primary
    assert scripts.call(ECHO, keys=["counter"], args=[1, 2, 3], client=redis_client)[4] == 2, "run once, not twice"
    assert redis_client.script_exists(ECHO.sha) == [True]


def test_an_error_answer_is_raised_and_the_connection_stays_usable(redis_client: redis.Redis) -> None:
    failing = Script(None, b"return redis.error_reply('NOPE told to fail')")
    with pytest.raises(redis.ResponseError, match="told to fail"):
        scripts.call(failing, keys=[], args=[], client=redis_client)
    assert scripts.call(ECHO, keys=["counter"], args=[1, 2, 3], client=redis_client)[4] == 1


def test_a_word_hiredis_cannot_pack_is_refused_as_redis_py_refuses_it(redis_client: redis.Redis) -> None:
    with pytest.raises(redis.DataError):
        scripts.call(ECHO, keys=["counter"], args=[True, 2, 3], client=redis_client)
    assert redis_client.get("counter") is None, "nothing was run"


def test_a_connection_broken_in_flight_is_dropped_not_reused(redis_client: redis.Redis,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    pool = redis_client.connection_pool
    scripts.call(ECHO, keys=["counter"], args=[1, 2, 3], client=redis_client)
    connection = pool.get_connection()
    pool.release(connection)

    def cut(*args: object, **kwargs: object) -> object:
        raise redis.ConnectionError("connection reset")

    monkeypatch.setattr(connection, "read_response", cut)
    with pytest.raises(redis.ConnectionError):
        scripts.call(ECHO, keys=["counter"], args=[1, 2, 3], client=redis_client)
    monkeypatch.undo()
    assert connection._sock is None, "disconnected: an answer left unread can never be read as another's"
    # the script did run (its answer was lost): the next call sees its write, on a fresh socket
    assert scripts.call(ECHO, keys=["counter"], args=[1, 2, 3], client=redis_client)[4] == 3
    assert isinstance(connection._sock, socket.socket)
