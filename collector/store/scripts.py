"""The Lua scripts a job costs (its start, its end with the take of the next), sent straight on a connection.

redis-py's command layer wraps every command in its retry loop, its observability hooks and its event dispatch: for
the two scripts of each job that is more client CPU than packing the script's arguments and reading its answer.
`call` sends the EVALSHA on a connection of the client's pool and reads the answer, loading the script when the
server does not know it. It does not retry: a connection lost in flight raises, and the callers, which know
whether their script may be sent again, wait out the outage (`until_written`) or give back what it may have taken.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis import Redis
from redis.commands.core import Script
from redis.connection import AbstractConnection
from redis.exceptions import NoScriptError, ResponseError

try:
    import hiredis
except ImportError:  # pragma: no cover - hiredis is a pinned dependency
    hiredis = None


def call(script: Script, *, keys: Sequence[Any], args: Sequence[Any], client: Redis) -> Any:
    """What `script(keys=keys, args=args, client=client)` answers, sent as one EVALSHA (the script's text is sent
    with SCRIPT LOAD first only when the server does not know it: after a restart or a failover)."""
    words = ("EVALSHA", script.sha, len(keys), *keys, *args)
    own = client.connection
    pool = client.connection_pool
    connection = own or pool.get_connection()
    try:
        try:
            _send(connection, words)
            return connection.read_response()
        except NoScriptError:
            connection.send_command("SCRIPT", "LOAD", script.script)
            connection.read_response()
            _send(connection, words)
            return connection.read_response()
    except ResponseError:
        raise  # an error answer was read whole: the connection is fine
    except BaseException:
        connection.disconnect()  # an answer may be left unread on it: never hand it to the next command
        raise
    finally:
        if own is None:
            pool.release(connection)


def _send(connection: AbstractConnection, words: tuple[Any, ...]) -> None:
    """The command `words` packed by hiredis in one call where it is installed (redis-py first looks at every word
    for a bytearray or memoryview, a few hundred of them in an end script), else as redis-py packs it."""
    if hiredis is None:
        connection.send_command(*words)
        return
    try:
        packed = hiredis.pack_command(words)
    except TypeError:  # a word hiredis does not pack: redis-py converts it, or says what is wrong with it
        connection.send_command(*words)
        return
    connection.send_packed_command([packed])
