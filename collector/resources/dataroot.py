"""Roots for jobs' local files (the data root, file-root connections), opened without following symlinks."""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import os
import secrets
import site
import stat
import sys
import sysconfig
from collections.abc import Iterable, Iterator
from typing import IO

from collector.errors import ConfigError, UnsafePathError

# A file with one of these endings is code Python may import or run (.pth lines run at start-up): no job writes one.
CODE_SUFFIXES = (".py", ".pyc", ".pyo", ".pyw", ".pyd", ".so", ".pth")
# Each folder on the way to a file is opened with these: a symlink fails (ELOOP) instead of being followed.
FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
OPEN_FLAGS = {
    "r": os.O_RDONLY,
    "w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
    "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
}
NEW_FILE_MODE = 0o644        # a file a job creates: readable by the operator's other tools


def within(path: str, folder: str) -> bool:
    """Whether `path` is `folder` or lies below it (both absolute and normalized)."""
    return os.path.commonpath([path, folder]) == folder


class Root:
    """A folder whose files jobs name by relative paths: the data root, or the root of a `files` connection.

    Paths are checked when a spec is submitted (`file`) and again, component by component, when the file is
    opened (`LocalFile`): absolute paths, `~`, `..` and symlinks are refused, and so is writing code files or
    into folders code is imported from (`code_dirs`).
    """

    def __init__(self, path: str, *, label: str, read_only: bool = False, code_dirs: Iterable[str] = ()) -> None:
        self.path = os.path.realpath(path)      # the operator's own symlinks (to another disk) are resolved once
        self.label = label
        self.read_only = read_only
        self.code_dirs = tuple(code_dirs)

    def __repr__(self) -> str:
        return f"Root({self.label})"

    def file(self, path: str, *, write: bool) -> LocalFile:
        """The file at `path` under this root; `ValueError` says why it may not be used."""
        if not isinstance(path, str) or not path.strip():
            raise ValueError(f"give a file path relative to {self.label}, e.g. 'exports/rows.csv'")
        if "\x00" in path:
            raise ValueError(f"path {path!r} holds a NUL character; give a plain relative path")
        if path.startswith("~"):
            raise ValueError(f"path {path!r} starts with '~': home folders are out of reach; give a path "
                             f"relative to {self.label}")
        if os.path.isabs(path):
            raise ValueError(f"path {path!r} is absolute; give a path relative to {self.label}, "
                             "e.g. 'exports/rows.csv'")
        parts = tuple(p for p in path.split("/") if p not in ("", "."))
        if ".." in parts:
            raise ValueError(f"path {path!r} climbs out with '..'; give a path inside {self.label}")
        if not parts:
            raise ValueError(f"path {path!r} names {self.label} itself; give a file inside it")
        local = LocalFile(self, parts, display=path)
        if write:
            problem = local.write_problem()
            if problem:
                raise ValueError(problem)
        link = local.symlink_on_the_way()
        if link:
            raise ValueError(f"path {path!r} goes through the symlink {link!r}, and symlinks under {self.label} "
                             "are not followed; give the real path (or ask the operator for a files connection)")
        return local


class LocalFile:
    """A file under a `Root`, reached folder by folder from the root with `O_NOFOLLOW`, so nothing planted on
    the way (a symlink, a FIFO) takes a read or write anywhere else."""

    def __init__(self, root: Root, parts: tuple[str, ...], *, display: str) -> None:
        self.root, self.parts, self.display = root, parts, display

    def __str__(self) -> str:
        return self.display

    @property
    def name(self) -> str:
        return self.parts[-1]

    @property
    def path(self) -> str:
        """Where the file is (the root is a real path and no component may be a symlink, so this is real too)."""
        return os.path.join(self.root.path, *self.parts)

    def write_problem(self) -> str | None:
        """Why this file may not be written, or None."""
        if self.root.read_only:
            return f"{self.root.label} is read-only; write to a path under the data root instead"
        if self.name.lower().endswith(CODE_SUFFIXES):
            return (f"path {self.display!r} names a Python code file ({os.path.splitext(self.name)[1]}), which no "
                    "job may write; give the file another ending (e.g. .csv, .jsonl, .db)")
        for folder in self.root.code_dirs:
            if within(self.path, folder):
                return f"path {self.display!r} lies in {folder}, where code is imported from; no job writes there"
        return None

    def symlink_on_the_way(self) -> str | None:
        """The first component (as a relative path) that is a symlink now, or None."""
        current = self.root.path
        for index, part in enumerate(self.parts):
            current = os.path.join(current, part)
            try:
                if stat.S_ISLNK(os.lstat(current).st_mode):
                    return "/".join(self.parts[: index + 1])
            except OSError:
                return None     # missing (or under a file): opening it says so
        return None

    def _refused(self, reason: str) -> UnsafePathError:
        return UnsafePathError(f"path {self.display!r} under {self.root.label} was not opened: {reason}",
                               details={"path": self.display})

    @contextlib.contextmanager
    def folder(self, *, create: bool) -> Iterator[int]:
        """A descriptor of the file's folder, each component opened below the last without following links."""
        if create:
            os.makedirs(self.root.path, exist_ok=True)
        fd = os.open(self.root.path, FOLDER)
        try:
            for index, part in enumerate(self.parts[:-1]):
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, dir_fd=fd)
                try:
                    below = os.open(part, FOLDER, dir_fd=fd)
                except OSError as exc:
                    if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    where = "/".join(self.parts[: index + 1])
                    # O_NOFOLLOW|O_DIRECTORY fails on a symlink with ELOOP or ENOTDIR: look at the entry itself.
                    if stat.S_ISLNK(os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode):
                        raise self._refused(f"{where!r} is a symlink, which is never followed") from None
                    raise self._refused(f"{where!r} is not a folder") from None
                os.close(fd)
                fd = below
            yield fd
        finally:
            os.close(fd)

    def _check_write(self) -> None:
        problem = self.write_problem()
        if problem:
            raise self._refused(problem)

    def _check_entry(self, folder: int) -> os.stat_result | None:
        """The file's own entry (not followed): None when missing; refused when a symlink or not a regular file."""
        try:
            entry = os.stat(self.name, dir_fd=folder, follow_symlinks=False)
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(entry.st_mode):
            raise self._refused(f"{self.name!r} is a symlink, which is never followed")
        if not stat.S_ISREG(entry.st_mode):
            raise self._refused(f"{self.name!r} is not a regular file")
        return entry

    def open(self, mode: str = "r", *, encoding: str = "utf-8", newline: str | None = None) -> IO[str]:
        """The file opened as text: `r` reads, `w` truncates, `a` appends; missing folders are made for writes."""
        writing = mode != "r"
        if writing:
            self._check_write()
        # O_NONBLOCK: opening a FIFO planted under the root must not hang the worker; cleared once it is a file.
        flags = OPEN_FLAGS[mode] | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        with self.folder(create=writing) as folder:
            try:
                fd = os.open(self.name, flags, NEW_FILE_MODE, dir_fd=folder)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise self._refused(f"{self.name!r} is a symlink, which is never followed") from None
                raise
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise self._refused(f"{self.name!r} is not a regular file")
            os.set_blocking(fd, True)
            return os.fdopen(fd, mode, encoding=encoding, newline=newline)
        except BaseException:
            os.close(fd)
            raise

    def exists(self) -> bool:
        """Whether the file is there (a regular file, reached without a symlink)."""
        try:
            with self.folder(create=False) as folder:
                return self._check_entry(folder) is not None
        except (FileNotFoundError, NotADirectoryError):
            return False

    def check_writable(self) -> str:
        """Whether a job could write this file now, found without writing or creating anything: a note saying so,
        or `UnsafePathError` (a symlink, not a regular file, a code file) or `PermissionError` with the reason."""
        self._check_write()
        folder, missing = self.root.path, list(self.parts[:-1])
        if not os.path.isdir(folder):
            raise PermissionError(f"{self.root.label} ({folder}) does not exist on this worker; the worker creates "
                                  "the data root at start, a files connection's root must exist")
        while missing:
            below = os.path.join(folder, missing[0])
            try:
                entry = os.lstat(below)
            except FileNotFoundError:
                break
            if stat.S_ISLNK(entry.st_mode) or not stat.S_ISDIR(entry.st_mode):
                where = "/".join(self.parts[: len(self.parts) - len(missing)])
                raise self._refused(f"{where!r} is {'a symlink' if stat.S_ISLNK(entry.st_mode) else 'not a folder'}")
            folder = below
            missing.pop(0)
        if missing:
            if not os.access(folder, os.W_OK | os.X_OK):
                raise PermissionError(f"cannot create folders in {folder}: this worker's user may not write there")
            return f"{self.display} can be created under {self.root.label}"
        with self.folder(create=False) as fd:
            entry = self._check_entry(fd)
        if entry is None:
            if not os.access(folder, os.W_OK | os.X_OK):
                raise PermissionError(f"cannot create {self.display}: this worker's user may not write in {folder}")
            return f"{self.display} can be created under {self.root.label}"
        if not os.access(self.path, os.W_OK):
            raise PermissionError(f"{self.display} is there, but this worker's user may not write to it")
        return f"{self.display} is there and writable"

    def checked_path(self, *, create_folders: bool) -> str:
        """The file's path for a library that opens files itself (SQLite), checked component by component right
        before: no symlink on the way, and the file a regular one (or not there yet)."""
        if create_folders:
            self._check_write()
        with self.folder(create=create_folders) as folder:
            self._check_entry(folder)
        return self.path

    def sibling(self, name: str) -> LocalFile:
        """The file `name` in this file's folder."""
        folder = self.display.rpartition("/")[0]
        return LocalFile(self.root, (*self.parts[:-1], name), display=f"{folder}/{name}" if folder else name)

    def temporary_sibling(self) -> LocalFile:
        """A new, empty, hidden file beside this one, with this one's permissions (a new file's when it is new)."""
        self._check_write()
        with self.folder(create=True) as folder:
            previous = self._check_entry(folder)
            name = f".{self.name}.{secrets.token_hex(4)}.tmp"
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(name, flags, 0o600, dir_fd=folder)
            try:
                os.fchmod(fd, stat.S_IMODE(previous.st_mode) if previous else NEW_FILE_MODE)
            finally:
                os.close(fd)
        return self.sibling(name)

    def rename_over(self, target: LocalFile) -> None:
        """Move this file over `target`, a file in the same folder, in one atomic step."""
        target._check_write()
        with self.folder(create=False) as folder:
            target._check_entry(folder)
            os.replace(self.name, target.name, src_dir_fd=folder, dst_dir_fd=folder)

    def remove(self) -> None:
        """Delete the file if it is there."""
        with contextlib.suppress(FileNotFoundError), self.folder(create=False) as folder:
            os.unlink(self.name, dir_fd=folder)

    @contextlib.contextmanager
    def replacing(self, *, encoding: str = "utf-8", newline: str | None = None) -> Iterator[IO[str]]:
        """A new file, written beside this one and renamed over it (atomically) when the block ends without
        an error; readers see the old file or the new one. It keeps the old file's permissions."""
        temporary = self.temporary_sibling()
        try:
            with temporary.open("w", encoding=encoding, newline=newline) as out:
                yield out
            temporary.rename_over(self)
        except BaseException:
            with contextlib.suppress(OSError):
                temporary.remove()
            raise


# ------------------------------------------------------------------------------------ where code lives


def code_folders(platforms_package: str) -> tuple[list[str], list[str]]:
    """Folders Python imports code from: (no root may lie inside these, no root may contain these).

    Inside: collector's own packages, the platforms package, site-packages and the standard library. Contain:
    those and every folder on `sys.path` (a root holding one could shadow a module with a file it writes)."""
    inside: set[str] = set()
    for name in ("collector", "storage", platforms_package):
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        for location in (spec.submodule_search_locations or []) if spec else []:
            inside.add(os.path.realpath(location))
    paths = sysconfig.get_paths()
    candidates = [paths.get(key) for key in ("stdlib", "platstdlib", "purelib", "platlib")]
    candidates += [*site.getsitepackages(), site.getusersitepackages()]
    inside.update(os.path.realpath(c) for c in candidates if c and os.path.isdir(c))
    contain = set(inside)
    contain.update(os.path.realpath(entry or os.curdir) for entry in sys.path
                   if os.path.isdir(entry or os.curdir))
    return sorted(inside), sorted(contain)


def check_root(path: str, *, setting: str, inside: Iterable[str], contain: Iterable[str]) -> str:
    """`path` as a real path, or `ConfigError` when jobs writing under it could put code where Python imports it."""
    real = os.path.realpath(path)
    for folder in inside:
        if within(real, folder):
            raise ConfigError(
                f"{setting}={path!r} lies in {folder}, where Python imports code from, so a job could write code "
                "there; choose a folder outside it (e.g. /var/lib/collector/data)"
            )
    for folder in contain:
        if within(folder, real):
            raise ConfigError(
                f"{setting}={path!r} contains {folder}, where Python imports code from, so a job could write code "
                "there; choose a folder of its own that holds no code (e.g. ./data)"
            )
    return real
