"""Host memory for XLA's CPU runtime: glibc keeps what a step frees, set once per process."""

import platform
import sys

from scalefit.training import host


def test_keep_freed_memory_takes_effect_once_on_glibc():
    took = host.keep_freed_memory()
    assert isinstance(took, bool) and host.keep_freed_memory() is took  # one call per process does it
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert took  # both mallopt calls were accepted
    else:
        assert not took
