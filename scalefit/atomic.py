"""The one atomic writer: every file a reader may open is replaced whole or not at all.

A temporary file is written in the target's folder, flushed to disk, then renamed over the target
(``os.replace`` is atomic on POSIX and Windows), so a process killed at any instant leaves the old
version or the new one, never half of either, and a failed write leaves no temporary file behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

TMP_SUFFIX = ".tmp"  # a file name ending in this under a run folder is a write a kill interrupted


def atomic_write_bytes(path, payload: bytes) -> Path:
    """Write ``payload`` to ``path`` through a temporary file and ``os.replace``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600 files; give the result the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path, text: str) -> Path:
    """Atomically write ``text`` (UTF-8)."""
    return atomic_write_bytes(path, text.encode())


def write_json(path, obj, indent: int | None = 2) -> Path:
    """Atomically write ``obj`` as JSON (a trailing newline, keys in the order given)."""
    return write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def read_json(path):
    """Parse a JSON file; ValueError naming the file when it is not valid JSON or is not a file."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a folder, expected a JSON file")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
