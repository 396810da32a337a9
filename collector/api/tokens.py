"""Named API tokens with scopes: `name:scopes:token` entries from `COLLECTOR_API_TOKENS` or a tokens file.

A scope grants the scopes listed under it in `IMPLIES`: `admin` grants everything, `operate` and `submit`
each grant `read` too, and neither grants the other (an operator who may cancel cannot queue new work,
a CI job that queues work cannot cancel other people's).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import re
from collections.abc import Sequence
from pathlib import Path

from collector import defaults
from collector.config import Config
from collector.errors import ConfigError

SCOPES = ("read", "submit", "operate", "admin")  # lowest first
IMPLIES: dict[str, frozenset[str]] = {
    "read": frozenset({"read"}),
    "submit": frozenset({"submit", "read"}),
    "operate": frozenset({"operate", "read"}),
    "admin": frozenset(SCOPES),
}
ANONYMOUS = "anonymous"  # who acts when the API is open (no tokens configured)
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
FORM = "name:scopes:token, e.g. ci:submit:<token>,ops:operate+submit:<token>,me:admin:<token>"
SCOPE_HELP = f"scopes are {', '.join(SCOPES)}; join several with + (admin implies all, operate and submit imply read)"


@dataclasses.dataclass(frozen=True)
class Token:
    """One configured token: its name (who acts), the scopes it grants (implied ones included) and its digest."""

    name: str
    scopes: frozenset[str]
    digest: bytes = dataclasses.field(repr=False)

    def allows(self, scope: str) -> bool:
        return scope in self.scopes


def digest(secret: str) -> bytes:
    # Digests have one length whatever was sent, so comparing them leaks not even the token's length.
    return hashlib.sha256(secret.encode()).digest()


def granted(scopes: str) -> frozenset[str] | None:
    """The scopes `read+submit` grants, implied ones included; None when a word is not a scope."""
    words = scopes.split("+")
    if not all(word in IMPLIES for word in words):
        return None
    return frozenset().union(*(IMPLIES[word] for word in words))


def parse_entry(entry: str, where: str) -> Token:
    """One `name:scopes:token` entry; `where` says where it came from in the errors (which never show the token)."""
    parts = entry.split(":", 2)
    if len(parts) != 3:
        raise ConfigError(
            f"{where} is not name:scopes:token (a bare token is no longer accepted: every token needs a name, "
            f"which is recorded as who acted, and scopes). Write it as {FORM}; {SCOPE_HELP}"
        )
    name, scopes, secret = (part.strip() for part in parts)
    if not NAME.fullmatch(name) or name == ANONYMOUS:
        shown = f" {name!r}" if re.fullmatch(r"[\w.@ -]{1,64}", name) else ""  # never a fragment of a secret
        raise ConfigError(
            f"{where}: the name{shown} is not a token name; use 1-64 letters, digits, '_', '.', '@' or '-' "
            f"(starting with a letter or digit), other than {ANONYMOUS!r}"
        )
    scope_set = granted(scopes)
    if scope_set is None:
        shown = f" {scopes!r}" if re.fullmatch(r"[a-z+]{1,30}", scopes) else ""
        raise ConfigError(f"{where} (token {name!r}): unknown scope{shown}; {SCOPE_HELP}")
    if len(secret) < defaults.MIN_TOKEN_CHARS:
        raise ConfigError(
            f"{where} (token {name!r}): the token is shorter than {defaults.MIN_TOKEN_CHARS} characters; use a "
            "long random one, e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
        )
    return Token(name=name, scopes=scope_set, digest=digest(secret))


def parse_tokens(raw: str | None, *, source: str = "COLLECTOR_API_TOKENS") -> tuple[Token, ...]:
    """The comma-separated entries of `raw`; `ConfigError` for a malformed entry, a name or a token given twice."""
    entries = [e.strip() for e in (raw or "").split(",")]
    return _checked([parse_entry(e, f"{source} entry {n}") for n, e in enumerate(entries, 1) if e], source)


def read_tokens_file(path: str) -> tuple[Token, ...]:
    """One `name:scopes:token` per line; blank lines and lines starting with `#` are skipped."""
    source = f"COLLECTOR_API_TOKENS_FILE ({path})"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source} cannot be read ({type(exc).__name__}: {exc.strerror or exc}); "
                          "point it at a readable UTF-8 file with one name:scopes:token per line") from None
    tokens = [parse_entry(line.strip(), f"{source} line {n}")
              for n, line in enumerate(text.splitlines(), 1) if line.strip() and not line.lstrip().startswith("#")]
    return _checked(tokens, source)


def _checked(tokens: list[Token], source: str) -> tuple[Token, ...]:
    names = [t.name for t in tokens]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"{source}: the name(s) {twice} are given more than once; give each token its own name")
    digests = [t.digest for t in tokens]
    shared = sorted({t.name for t in tokens if digests.count(t.digest) > 1})
    if shared:
        raise ConfigError(f"{source}: the tokens {shared} have the same secret; each token needs its own secret, "
                          "or the service cannot tell who acted")
    return tuple(tokens)


def configured_tokens(config: Config) -> tuple[Token, ...]:
    """The tokens `config` names (the variable or the file, not both); empty means the API is open."""
    if config.api_tokens and config.api_tokens_file:
        raise ConfigError("both COLLECTOR_API_TOKENS and COLLECTOR_API_TOKENS_FILE are set; set one of them, so "
                          "that removing a token from it is sure to revoke it")
    if config.api_tokens_file:
        return read_tokens_file(config.api_tokens_file)
    return parse_tokens(config.api_tokens)


def identify(given: str, tokens: Sequence[Token]) -> Token | None:
    """The token whose secret is `given`, in time that does not depend on which one (or whether any) matched."""
    given_digest = digest(given)
    found: Token | None = None
    for token in tokens:  # every token is compared, whichever matches
        if hmac.compare_digest(given_digest, token.digest):
            found = token
    return found
