"""The run folder: ``<runs_dir>/<recipe>/<timestamp>/`` and the facts written into it."""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

import dlzoo


def git_revision() -> str:
    """The commit of the dlzoo checkout (with ``-dirty`` if modified), or 'unknown'."""
    here = Path(__file__).resolve().parent
    try:
        revision = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return revision + ("-dirty" if dirty else "")


def cpu_name() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu": cpu_name(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # widest SIMD torch uses: AVX2, AVX512
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
        "cuda_device": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, in MiB. On Linux, ``VmHWM`` of
    /proc/self/status, the peak of this program's own memory: getrusage's ``ru_maxrss`` also
    counts the process that started it (its peak up to the exec), so a run started by a large
    process, such as a benchmark that has trained in memory, would report that process's peak."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)  # "VmHWM:  123456 kB"
    except OSError:
        pass  # not Linux
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # macOS: bytes, the BSDs: KiB
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def command_line() -> str:
    """The command that started this process, as it would be typed again: ``dlzoo train ...`` for
    the command line (also ``python -m dlzoo``; ``dlzoo train ... --nproc N`` for a data-parallel
    run on one machine, ``torchrun --nnodes M --nproc-per-node N -m dlzoo ...`` on several),
    else ``python SCRIPT ...`` (the Python API)."""
    program, *arguments = sys.argv or [""]
    path = Path(program)
    if path.name == "dlzoo" or (path.parent.name == "dlzoo" and path.name in ("__main__.py", "cli.py")):
        world, local = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        if world > 1 and world == local:
            return shlex.join(["dlzoo", *arguments, "--nproc", str(world)])
        if world > 1:
            launcher = ["torchrun", "--nnodes", str(world // local), "--nproc-per-node", str(local), "-m"]
            return shlex.join([*launcher, "dlzoo", *arguments])
        return shlex.join(["dlzoo", *arguments])
    return shlex.join(["python", program, *arguments]) if program else "python (interactive)"


def new_run_dir(runs_dir: str, recipe: str, prefix: str = "") -> Path:
    """A fresh folder ``<runs_dir>/<recipe>/<prefix><time>``; never reuses an existing one."""
    parent = Path(runs_dir) / recipe
    parent.mkdir(parents=True, exist_ok=True)
    stamp = prefix + datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    for suffix in ["", *(f"-{i}" for i in range(1, 1000))]:
        folder = parent / f"{stamp}{suffix}"
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise RuntimeError(f"could not make a new run folder under {parent}")


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON atomically (temporary file + rename)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def now() -> str:
    return datetime.datetime.now().isoformat(timespec="seconds")


def version() -> str:
    return dlzoo.__version__
