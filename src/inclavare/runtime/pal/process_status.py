"""Turning a wait(2) status into the exit code a container reports.

A payload that exits with N makes the container exit with N; one killed by signal N makes it
exit with 128 + N, as shells and runc report it. PAL v2/v3 ``exit_value`` is a wait status
(Occlum's convention); v1 ``exit_code`` is already an exit code.
"""

from __future__ import annotations


def exit_code_from_status(status: int) -> int:
    """The shell-style exit code of a wait status (stopped/invalid statuses give 255)."""
    status &= 0xFFFF
    low = status & 0x7F
    if low == 0:
        return (status >> 8) & 0xFF
    if low != 0x7F:
        return 128 + low
    return 255


def status_from_exit_code(code: int) -> int:
    """The wait status of a process that exited with ``code`` (v1 ``pal_exec`` results)."""
    return (code & 0xFF) << 8
