"""Who holds a claim: enough about a process to tell, later, that it is gone.

A sender's "sending" claim in the sent-ledger outlives a crash of its process; a restarted
process would otherwise wait out the send timeout before it may call the claim stale. The
owner is recorded as this host's boot, PID namespace, process id and the process's start time
(Linux `/proc`): a later process on the same machine and namespace sees at once that the pid is
free or belongs to a younger process. Anything it cannot check (another host or container, no
`/proc`) counts as alive, and the caller waits as before.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

__all__ = ["owner_is_gone", "this_process"]


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, None when there is no such pid."""
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return None
    # Field 2, the command name, may hold spaces and parentheses: count after its last ')'.
    # Field 22 (starttime) is then the 20th.
    return int(stat.rsplit(")", 1)[1].split()[19])


@functools.cache
def _machine() -> tuple[str, str] | None:
    """(boot id, PID namespace): pids and start times mean the same only within both."""
    boot = _read("/proc/sys/kernel/random/boot_id")
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
    return None if boot is None else (boot, namespace)


def this_process() -> dict[str, Any] | None:
    """This process as a claim's owner (JSON), None where it cannot be checked later."""
    return _process(os.getpid())  # by pid: a forked child is an owner of its own


@functools.cache
def _process(pid: int) -> dict[str, Any] | None:
    machine, start = _machine(), _start_ticks(pid)
    if machine is None or start is None:
        return None
    return {"boot": machine[0], "pidns": machine[1], "pid": pid, "start": start}


def owner_is_gone(owner: Any) -> bool:
    """True only when `owner` (from `this_process`) was a process of this machine and PID
    namespace that no longer runs; False when it runs or cannot be told."""
    machine = _machine()
    if not isinstance(owner, dict) or machine is None:
        return False
    if (owner.get("boot"), owner.get("pidns")) != machine:
        return False
    pid, start = owner.get("pid"), owner.get("start")
    if not isinstance(pid, int) or not isinstance(start, int):
        return False
    return _start_ticks(pid) != start
