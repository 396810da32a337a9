"""What the operator lets jobs reach from this process: the named connections and the data root.

The API, every worker and a local run load it from the same settings (`COLLECTOR_CONNECTIONS`,
`COLLECTOR_DATA_DIR`) at start-up; a platform or storage backend resolves its `connection` and its local
paths through it in `__init__`, so a spec is refused at submit and checked again where the job runs.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

from collector.config import Config
from collector.errors import ConfigError, SettingError
from collector.masking import forget, remember
from collector.resources import connections as connections_file
from collector.resources.connections import Connection
from collector.resources.dataroot import LocalFile, Root, check_root, code_folders


@dataclasses.dataclass(frozen=True)
class Reach:
    """The data root and the operator's connections by name."""

    data_root: Root
    connections: Mapping[str, Connection]
    # What it was built from (the secret key among it), to tell whether a config needs another one.
    key: tuple[object, ...] = dataclasses.field(default=(), repr=False)

    @classmethod
    def from_config(cls, config: Config, *, create_root: bool = False) -> Reach:
        """Load and check everything; `ConfigError` (naming the setting or the connection) when anything is off."""
        inside, contain = code_folders(config.platforms_package)
        real = check_root(config.data_dir, setting="COLLECTOR_DATA_DIR", inside=inside, contain=contain)
        if create_root:
            make_root(real)
        found = connections_file.load(config.connections, environ=config.environ, secret_key=config.secret_key,
                                      code_dirs=(inside, contain))
        root = Root(real, label="the data root", code_dirs=inside)
        return cls(root, found, key=reach_key(config))

    def describe_connections(self) -> list[dict[str, str]]:
        """Names and kinds only: what `GET /platforms/get` shows."""
        return [self.connections[name].describe() for name in sorted(self.connections)]

    def secrets(self) -> list[str]:
        return [value for connection in self.connections.values() for value in connection.secrets]

    def connection(self, name: str, *, kinds: tuple[str, ...], setting: str = "connection") -> Connection:
        """The connection `name`, of one of `kinds`; `SettingError(setting)` when there is none such."""
        found = self.connections.get(name) if isinstance(name, str) else None
        if found is None:
            defined = ", ".join(f"{c['name']} ({c['kind']})" for c in self.describe_connections())
            hint = (f"the operator defined: {defined}" if defined
                    else "this service has none (the operator names them in COLLECTOR_CONNECTIONS)")
            raise SettingError(setting, f"{name!r} is not a connection; {hint}")
        if found.kind not in kinds:
            raise SettingError(setting, f"connection {name!r} is a {found.kind} connection; {setting} takes "
                                        f"a {' or '.join(kinds)} connection")
        return found

    def local_file(self, path: str, *, connection: Connection | None = None, write: bool = False,
                   setting: str = "path") -> LocalFile:
        """The file at `path` under the data root (or under a files `connection`'s root): `SettingError(setting)`
        when it is absolute, starts with `~`, climbs out with `..`, goes through a symlink, or (for `write`)
        is code, lies where code is imported from, or is under a read-only root."""
        root = connection.root if connection is not None and connection.root is not None else self.data_root
        try:
            return root.file(path, write=write)
        except ValueError as exc:
            raise SettingError(setting, str(exc)) from None


def make_root(path: str) -> None:
    """Create the data root if it is missing (workers do at start-up; writes make it too)."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"COLLECTOR_DATA_DIR: the data root {path} cannot be created ({exc.strerror or exc}); "
                          "create it for the user the workers run as, or point COLLECTOR_DATA_DIR elsewhere") from None


def reach_key(config: Config) -> tuple[object, ...]:
    connections = os.path.abspath(config.connections) if config.connections else None
    return (os.path.abspath(config.data_dir), connections, config.platforms_package, config.secret_key)


_installed: Reach | None = None


def install(loaded: Reach | None) -> Reach | None:
    """Make `loaded` the one this process's platforms and backends use (None forgets it); its secrets are masked
    in every log line from now on."""
    global _installed
    if _installed is not None:
        forget(_installed.secrets())
    _installed = loaded
    if loaded is not None:
        remember(loaded.secrets())
    return loaded


def ensure(config: Config, *, create_root: bool = False) -> Reach:
    """The installed reach if it was built from the same settings as `config`; else one built and installed now."""
    if _installed is not None and _installed.key == reach_key(config):
        if create_root:
            make_root(_installed.data_root.path)
        return _installed
    loaded = Reach.from_config(config, create_root=create_root)
    install(loaded)
    return loaded


def current() -> Reach:
    """The reach of this process; built from the environment when no start-up code installed one."""
    return _installed if _installed is not None else ensure(Config.from_env())


def connection(name: str, *, kinds: tuple[str, ...], setting: str = "connection") -> Connection:
    """`Reach.connection` of this process: for a platform's or backend's `__init__`."""
    return current().connection(name, kinds=kinds, setting=setting)


def local_file(path: str, *, connection: Connection | None = None, write: bool = False,
               setting: str = "path") -> LocalFile:
    """`Reach.local_file` of this process: for a platform's or backend's `__init__`."""
    return current().local_file(path, connection=connection, write=write, setting=setting)


__all__ = ["Reach", "connection", "current", "ensure", "install", "local_file"]
