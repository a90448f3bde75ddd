"""A worker process of the parallel executor: pinned to its cores, it trains the runs it is sent.

``python -m scalefit.sweep.worker --cpus 0`` pins itself to the listed cores before JAX starts (the
executor also sets its XLA thread flags), then reads frames from stdin and answers each on stdout:
a frame is an 8-byte big-endian length and a pickle. A request is ``(plan, run, store)``; the answer
is ``("ok", RunResult)`` or ``("error", exception)``. It exits at the end of stdin, and with its parent
(Linux: the parent-death signal), so a killed sweep leaves no worker holding a run's lock.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import pickle
import signal
import struct
import sys
import traceback
from typing import BinaryIO

_HEADER = struct.Struct(">Q")


def write_frame(f: BinaryIO, obj) -> None:
    """Send one pickled object."""
    data = pickle.dumps(obj)
    f.write(_HEADER.pack(len(data)) + data)
    f.flush()


def read_exactly(f: BinaryIO, n: int) -> bytes | None:
    """``n`` bytes, or None at the end of the stream (a closed pipe)."""
    parts, left = [], n
    while left:
        chunk = f.read(left)
        if not chunk:
            return None
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def read_frame(f: BinaryIO):
    """The next pickled object, or None when the stream has ended."""
    head = read_exactly(f, _HEADER.size)
    if head is None:
        return None
    body = read_exactly(f, _HEADER.unpack(head)[0])
    return None if body is None else pickle.loads(body)


def _die_with_parent() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (AttributeError, OSError):  # not Linux: the closed stdin still ends the worker between runs
        pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="scalefit sweep worker (started by the parallel executor)")
    ap.add_argument("--cpus", default="", help="comma-separated cores to pin this process to")
    ap.add_argument("--parent", type=int, default=None, help="the executor's pid")
    args = ap.parse_args(argv)
    _die_with_parent()
    if args.parent is not None and os.getppid() != args.parent:
        return 1  # the parent died before the signal was armed
    if args.cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    # The protocol owns the real stdout; anything else printed (by Python or C) goes to stderr.
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    requests = sys.stdin.buffer

    from scalefit.sweep.execute import execute_run  # JAX starts here, after the pinning
    from scalefit.sweep.timing import StartupClock

    startup = StartupClock()  # this worker's start-up goes to its first run
    while (request := read_frame(requests)) is not None:
        plan, run, store = request
        try:
            answer = ("ok", execute_run(plan, run, store, startup=startup.take()))
        except Exception as e:  # noqa: BLE001 - handed to the driver, which raises it
            try:
                pickle.dumps(e)
                answer = ("error", e)
            except Exception:  # noqa: BLE001 - an exception that cannot travel goes as its text
                answer = ("error", RuntimeError("".join(traceback.format_exception(e))))
        write_frame(answers, answer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
