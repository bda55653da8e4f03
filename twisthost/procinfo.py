"""Facts about processes that several parts read (recycling, the status page)."""

from __future__ import annotations

import os


def rss_mib(pid) -> float | None:
    """Resident memory of ``pid`` in MiB (Linux ``/proc``), None if unknown."""
    try:
        with open(f"/proc/{pid}/statm") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
