"""Freed memory kept for reuse while training (glibc's malloc thresholds), and handed back after."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from contextlib import contextmanager

import pytest

import dlzoo
from dlzoo.training import allocator

needs_glibc = pytest.mark.skipif(allocator.glibc() is None, reason="mallopt is glibc's (Linux)")

FAULTS = textwrap.dedent(
    """
    import os, resource, sys, torch
    from dlzoo.training.allocator import freed_memory_kept

    def faults_of_ten_blocks():  # minor page faults of ten 64 MiB blocks, each written and freed
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(10):
            torch.ones(16 << 20)
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    def resident_mib():
        return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    default = faults_of_ten_blocks()
    start = resident_mib()
    with freed_memory_kept(sys.argv[1] == "on") as kept:
        faults_of_ten_blocks()  # the heap grows over the first few blocks, faulting them in once
        inside = faults_of_ten_blocks()
        held = resident_mib() - start
    print(kept, default, inside, round(held), round(resident_mib() - start))
    """
)


def block_faults(setting: str) -> tuple[str, int, int, int, int]:
    """In a fresh process (the thresholds are the whole process's): whether ``freed_memory_kept``
    took effect, the page faults of ten freed 64 MiB blocks before and within it, and the MiB
    the process holds beyond its start, with every block freed, within and after it."""
    done = subprocess.run([sys.executable, "-c", FAULTS, setting], capture_output=True, text=True, check=True)
    kept, *numbers = done.stdout.split()
    return kept, *map(int, numbers)


@needs_glibc
def test_freed_blocks_are_reused_without_page_faults_within_and_handed_back_after():
    kept, default, inside, held, held_after = block_faults("on")
    assert kept == "True"
    pages = 10 * (64 << 20) // 4096
    assert default > pages // 2  # glibc hands each 64 MiB block back and faults the next one in
    assert inside < pages // 100  # kept: the same pages serve every block
    assert held >= 64  # ... because the process holds on to them
    assert held_after < 16  # handed back once the epoch is over


@needs_glibc
def test_reuse_memory_off_changes_nothing():
    kept, default, inside, held, _ = block_faults("off")
    assert kept == "False"
    assert min(default, inside) > 10 * (64 << 20) // 4096 // 2
    assert held < 16


def test_elsewhere_than_glibc_nothing_is_changed(monkeypatch):
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("", ""))
    with allocator.freed_memory_kept() as kept:
        assert kept is False


@pytest.mark.parametrize("reuse", [True, False])
def test_the_loop_keeps_freed_memory_around_each_training_epoch_as_train_reuse_memory_says(
    tmp_path, monkeypatch, reuse
):
    entered = []

    @contextmanager
    def recorded(enabled=True):
        entered.append(enabled)
        yield enabled

    monkeypatch.setattr("dlzoo.training.loop.freed_memory_kept", recorded)
    overrides = ["train.epochs=2", f"train.reuse_memory={str(reuse).lower()}"]
    dlzoo.train("digits-lenet5", [*overrides, "log.tensorboard=false"], runs_dir=str(tmp_path), quiet=True)
    assert entered == [reuse, reuse]
