"""The read-only guard of `sql_query`: one SELECT, and none of the functions that reach files, programs or servers.

A statement is read the way each server mode of its database could read it (PostgreSQL with and without
standard-conforming strings; MySQL/MariaDB with and without backslash escapes and ANSI quotes; SQLite), with
string literals blanked, comments turned into spaces and quoted identifiers unquoted. What is code in any of
those readings is checked, so no quoting or comment trick hides a call from the guard while the server runs it.
"""

from __future__ import annotations

import dataclasses
import re

from collector.errors import SettingError

READING_WORDS = ("select", "with")

# Reached from a SELECT, these read or write files on the database server, run programs, connect elsewhere,
# run SQL held in a string, or change the server or the session's limits.
FUNCTIONS = (
    "load_file", "sys_exec", "sys_eval",                                              # MySQL / MariaDB
    "pg_read_file", "pg_read_binary_file", "pg_ls_dir", "pg_stat_file", "pg_ls_logdir", "pg_ls_waldir",
    "pg_ls_tmpdir", "pg_ls_archive_statusdir", "pg_ls_logicalsnapdir", "pg_ls_logicalmapdir",
    "pg_ls_replslotdir", "pg_logdir_ls", "pg_file_write", "pg_file_rename", "pg_file_unlink", "pg_file_sync",
    "lo_import", "lo_export", "pg_terminate_backend", "pg_cancel_backend", "pg_reload_conf",
    "pg_rotate_logfile", "pg_promote", "set_config", "query_to_xml", "query_to_xmlschema",
    "query_to_xml_and_xmlschema", "cursor_to_xml", "cursor_to_xmlschema",                # PostgreSQL
    "load_extension", "readfile", "writefile", "edit", "fts3_tokenizer",               # SQLite
)
REFUSED = (
    (re.compile(r"\binto\s+(outfile|dumpfile)\b"), "it writes a file on the database server"),
    (re.compile(r"\bload\s+(data|xml)\b"), "it reads files"),
    (re.compile(r"\bdblink\w*\s*\("), "it connects to other servers"),
    (re.compile(r"(?:^|(?<=[(;]))\s*copy\b"), "it reads and writes files and runs programs"),
    (re.compile(r"\b(?:" + "|".join(FUNCTIONS) + r")\s*\("), "it reaches files, programs or the server itself"),
)


@dataclasses.dataclass(frozen=True)
class Reading:
    """How one server mode reads quotes and comments."""

    backslash_escapes: bool = False       # \' escapes a quote inside '...' (and "..." where those are strings)
    double_quoted_strings: bool = False   # "..." is a string (MySQL without ANSI_QUOTES), not an identifier
    hash_comments: bool = False           # # starts a comment (MySQL)
    dash_needs_space: bool = False        # -- starts a comment only before a blank (MySQL)
    dollar_quotes: bool = False           # $tag$...$tag$ strings (PostgreSQL)
    e_strings: bool = False               # E'...' strings always take backslash escapes (PostgreSQL)
    nested_comments: bool = False         # /* /* */ */ nests (PostgreSQL)
    bracket_identifiers: bool = False     # [name] (SQLite)


READINGS: dict[str, tuple[Reading, ...]] = {
    "postgresql": tuple(Reading(backslash_escapes=b, dollar_quotes=True, e_strings=True, nested_comments=True)
                        for b in (False, True)),
    "mysql": tuple(Reading(backslash_escapes=b, double_quoted_strings=d, hash_comments=True, dash_needs_space=True)
                   for b in (True, False) for d in (True, False)),
    "sqlite": (Reading(bracket_identifiers=True),),
}
READINGS["mariadb"] = READINGS["mysql"]
IDENTIFIER_START = re.compile(r"[A-Za-z_\x80-\uffff]")
IDENTIFIER = re.compile(r"[A-Za-z_\x80-\uffff][A-Za-z0-9_$\x80-\uffff]*")
DOLLAR_TAG = re.compile(r"\$([A-Za-z_\x80-\uffff][A-Za-z0-9_\x80-\uffff]*)?\$")


def _refused(message: str) -> SettingError:
    return SettingError("query", message)


def code_of(query: str, reading: Reading) -> str:
    """`query` as `reading` sees its code: strings blanked to '', comments to a space, identifiers unquoted."""
    out: list[str] = []
    i, n = 0, len(query)
    while i < n:
        c = query[i]
        if c == "'" or (c == '"' and reading.double_quoted_strings):
            backslash = reading.backslash_escapes
            if reading.e_strings and out and out[-1].lower() == "e":
                backslash = True    # E'...' (IDENTIFIER took the E as a whole word, right before the quote)
            i = _skip_string(query, i, c, backslash=backslash)
            out.append("''")
        elif c in '"`' or (c == "[" and reading.bracket_identifiers):
            close = "]" if c == "[" else c
            end = query.find(close, i + 1)
            while end != -1 and close != "]" and query.startswith(close * 2, end):
                end = query.find(close, end + 2)
            if end == -1:
                raise _refused("the query has an unterminated quoted name")
            out.append(" " + query[i + 1:end].replace(close * 2, close) + " ")
            i = end + 1
        elif query.startswith("/*", i):
            if query.startswith(("/*!", "/*M!"), i):
                raise _refused("the query holds a MySQL executable comment (/*! ... */); write it without one")
            i = _skip_block_comment(query, i, nested=reading.nested_comments)
            out.append(" ")
        elif query.startswith("--", i) and (not reading.dash_needs_space or i + 2 >= n
                                             or query[i + 2] in " \t\r\n\f\v"):
            end = query.find("\n", i)
            i = n if end == -1 else end
            out.append(" ")
        elif c == "#" and reading.hash_comments:
            end = query.find("\n", i)
            i = n if end == -1 else end
            out.append(" ")
        elif c == "$" and reading.dollar_quotes:   # after a name the $ is part of it (IDENTIFIER takes it)
            tag = DOLLAR_TAG.match(query, i)
            if tag is None:
                out.append(c)
                i += 1
                continue
            end = query.find(tag.group(0), tag.end())
            if end == -1:
                raise _refused("the query has an unterminated dollar-quoted string")
            out.append("''")
            i = end + len(tag.group(0))
        elif IDENTIFIER_START.match(c):
            word = IDENTIFIER.match(query, i)
            assert word is not None
            if reading.dollar_quotes and word.group(0).lower() == "u" and query.startswith(("&'", '&"'), word.end()):
                raise _refused("the query uses a U&-escaped name or string; write it plainly")
            out.append(word.group(0))
            i = word.end()
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _skip_string(query: str, start: int, quote: str, *, backslash: bool) -> int:
    i = start + 1
    while i < len(query):
        c = query[i]
        if backslash and c == "\\":
            i += 2
        elif c == quote:
            if query.startswith(quote * 2, i):
                i += 2
            else:
                return i + 1
        else:
            i += 1
    raise _refused("the query has an unterminated string")


def _skip_block_comment(query: str, start: int, *, nested: bool) -> int:
    depth, i = 1, start + 2
    while i < len(query):
        if nested and query.startswith("/*", i):
            depth, i = depth + 1, i + 2
        elif query.startswith("*/", i):
            depth, i = depth - 1, i + 2
            if depth == 0:
                return i
        else:
            i += 1
    raise _refused("the query has an unterminated /* comment")


def check_query(query: str, backend: str) -> None:
    """`SettingError` (under `query`) unless `query` is a single SELECT (or WITH ... SELECT) that reaches no file
    or other server, however the server `backend` names (postgresql, mysql, mariadb, sqlite) reads its quotes."""
    for reading in READINGS.get(backend, tuple(r for rs in READINGS.values() for r in rs)):
        try:
            code = code_of(query, reading).lower()
        except SettingError as exc:
            if not reading.backslash_escapes or "unterminated" not in exc.message:
                raise
            raise _refused(f"{exc.message} where backslashes escape quotes (a server setting); put no backslash "
                             "right before a closing quote") from None
        first = re.match(r"\s*\(*\s*([a-z]+)", code)
        if first is None or first.group(1) not in READING_WORDS:
            shown = first.group(1).upper() if first else query.strip()[:20]
            raise _refused(f"query must be a SELECT (or WITH ... SELECT) statement, not {shown!r}")
        if ";" in code.strip().rstrip(";"):
            raise _refused("query holds more than one statement; give a single SELECT")
        for pattern, why in REFUSED:
            found = pattern.search(code)
            if found is not None:
                name = " ".join(found.group(0).replace("(", " ").split()).upper()
                raise _refused(f"query uses {name}, refused because {why}: sql_query only reads (INTO OUTFILE, "
                                 "LOAD DATA, COPY, dblink and functions that reach files or the server are refused)")
