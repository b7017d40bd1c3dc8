"""Atomic file writes, shared by every writer (exports, checkpoints).

A reader never sees a half-written file, and the previous version survives a crash mid-write:
the content goes to a uniquely named temporary file in the same folder, is fsynced, then
renamed over the target.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from vldistill.core.errors import DataError, DiskSpaceError

# kept free beyond a write's own size, so the system and the other writers are not starved
SPACE_MARGIN = 64 * 1024 * 1024


def check_free_space(folder: Path, needed: int, what: str) -> None:
    """Refuse, before writing anything, when ``folder``'s file system has less than ``needed``
    bytes (plus a margin) free."""
    folder = Path(folder)
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed + SPACE_MARGIN:
        raise DiskSpaceError(
            f"not enough disk space for {what}: it needs about {needed / 1e6:,.1f} MB (plus "
            f"{SPACE_MARGIN / 1e6:.0f} MB to spare) in {folder}, and {free / 1e6:,.1f} MB are "
            "free. Free some space, or write elsewhere (output_dir, teacher.cache.dir); nothing "
            "was written.")


def atomic_write(path: Path, write: Callable[[Path], object], expected_bytes: int | None = None,
                 keep_previous: Path | None = None) -> None:
    """Call ``write(temporary_path)``, fsync the file, rename it over ``path``, fsync the
    folder. With ``expected_bytes`` the free space is checked first; a disk that fills up
    during the write leaves the previous file as it was and no temporary file behind. With
    ``keep_previous`` the file being replaced is first renamed there (the last good version
    survives even a damaged new one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if expected_bytes is not None:
        check_free_space(path.parent, expected_bytes, f"writing {path}")
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    temporary = Path(name)
    try:
        try:
            write(temporary)
            with open(temporary, "rb") as handle:
                os.fsync(handle.fileno())
        except OSError as error:
            if error.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise DiskSpaceError(f"the disk filled up while writing {path} ({error.strerror}); "
                                 "the previous version, if any, is untouched and the partial "
                                 "file was removed. Free some space and run again (--resume "
                                 "continues a run).") from None
        os.chmod(temporary, 0o644)
        if keep_previous is not None and path.exists():
            os.replace(path, keep_previous)
        os.replace(temporary, path)
        _fsync_folder(path.parent)
    finally:
        temporary.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    """``text`` into ``path`` as UTF-8, atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable (POSIX: a folder's entries are synced through the folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass                    # some file systems refuse fsync on folders
    finally:
        os.close(fd)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_record(path: Path) -> dict:
    """{bytes, sha256} of a file, for a manifest that must detect damage later."""
    return {"bytes": Path(path).stat().st_size, "sha256": sha256_file(path)}


def verify_file(path: Path, record: dict, fix: str) -> None:
    """Refuse a file whose size or SHA-256 differs from its manifest record."""

    path = Path(path)
    size = path.stat().st_size
    if size != record["bytes"] or sha256_file(path) != record["sha256"]:
        raise DataError(f"{path} is damaged: its {'size' if size != record['bytes'] else 'SHA-256'}"
                        f" differs from the manifest's ({size} bytes, expected "
                        f"{record['bytes']}). {fix}")
