"""A finished listener hands back what it freed: on glibc, malloc_trim returns the free pages of
every arena, and the process's RSS comes down instead of keeping its high-water mark."""

from __future__ import annotations

import platform
import threading

import pytest

from realtime_gateway.listener.memory import release_free_memory


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_memory_freed_in_another_thread_goes_back_to_the_system():
    kept: list[bytes] = []

    def churn() -> None:  # as a listener's threads do: many mid-sized blocks in the thread's own arena
        blocks = [bytes(2000) + bytes([i % 256]) for i in range(40_000)]  # ~80 MiB
        kept.append(blocks[-1])  # one small survivor, as a long call's state would be

    t = threading.Thread(target=churn)
    t.start()
    t.join()
    before = rss_kib()
    assert release_free_memory() is True
    assert rss_kib() < before - 20_000  # at least 20 MiB of the ~80 back
