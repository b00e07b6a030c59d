"""Atomic file writes: a reader sees the old file or the new one, never half.

Example::

    from bnnprune_tf import files
    files.write_json("runs/demo/report.json", {"accuracy": 0.98})
    files.save_model(model, "runs/demo/model.keras")
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def check_writable(path: str | os.PathLike) -> Path:
    """Raise a clear error, before any work, if ``path`` cannot be written (its directory
    cannot be created or is not writable, or ``path`` is a directory).

    Example::

        files.check_writable(args.out)      # before hours of training
    """
    from bnnprune_tf.errors import FileWriteError

    path = Path(path).absolute()
    if path.is_dir():
        raise FileWriteError(f"{path} is a directory: pass a file name to write to")
    existing = path.parent
    while not existing.exists():            # the directories still to create: none yet
        existing = existing.parent
    if not existing.is_dir():
        raise write_error(OSError(errno.ENOTDIR, "Not a directory", str(existing)), path)
    if not os.access(existing, os.W_OK):
        raise write_error(OSError(errno.EACCES, "Permission denied", str(existing)), path)
    return path


# errno of a failed write -> how to fix it
WRITE_FAILURES = {errno.ENOSPC: "free disk space or choose another directory",
                  errno.EDQUOT: "free disk space (quota) or choose another directory",
                  errno.EACCES: "choose a directory you can write to (--run-dir / --out)",
                  errno.EPERM: "choose a directory you can write to (--run-dir / --out)",
                  errno.EROFS: "the file system is read-only: choose another directory",
                  errno.ENOTDIR: "a file stands where a directory is needed: choose another path"}


def save_model(model, path: str | os.PathLike) -> Path:
    """``model.save`` to a temporary ``.keras`` file beside ``path``, fsync, then rename it
    into place; the temporary file is removed if saving fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        model.save(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_error(error: OSError, where: str | os.PathLike) -> Exception:
    """A clear :class:`~bnnprune_tf.errors.BnnpruneError` for an ``OSError`` met while
    writing under ``where`` (disk full, not writable...): what happened and the fix.

    Example::

        try:
            files.write_bytes(out, data)
        except OSError as e:
            raise files.write_error(e, out) from e
    """
    from bnnprune_tf.errors import FileWriteError

    fix = WRITE_FAILURES.get(error.errno, "check the path and the disk")
    target = error.filename or where
    return FileWriteError(f"cannot write {target}: {error.strerror or error}; {fix}")
