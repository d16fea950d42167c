"""Continuing a run: which run, with which config, and only one process at a time.

- ``find_resumable`` picks the newest unfinished run of a recipe (``--resume auto``).
- ``resume_config`` rebuilds the run's saved config with the user's overrides and
  refuses a changed config unless forced, naming the keys that differ.
- ``RunLock`` holds an exclusive ``flock`` on ``<run>/.lock`` for the life of the
  process; the kernel drops it when the process dies, even by SIGKILL, so a lock
  is never stale.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Any

from dlzoo.config import RunConfig
from dlzoo.training.run import read_json

# Keys that may differ on resume without --force: where files are, and how verbose.
HARMLESS_KEYS = ("data.data_dir", "data.download", "log.runs_dir", "log.progress")


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def config_changes(old: RunConfig, new: RunConfig) -> list[str]:
    """``key old -> new`` for every setting that differs, harmless keys and [meta] aside."""
    before, after = _flatten(old.to_dict()), _flatten(new.to_dict())
    return [
        f"{key} {before.get(key)!r} -> {after.get(key)!r}"
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key) and key not in HARMLESS_KEYS and not key.startswith("meta.")
    ]


def saved_config(run_dir: Path) -> RunConfig:
    raw = read_json(run_dir / "config.json")
    return RunConfig.from_dict(raw, raw.pop("recipe"))


def resume_config(run_dir: Path, recipe: str, overrides: list[str], force: bool) -> RunConfig:
    """The config to continue ``run_dir`` with: its saved config plus ``overrides``."""
    if not (run_dir / "config.json").is_file() or not (run_dir / "run.json").is_file():
        raise FileNotFoundError(f"{run_dir} is not a dlzoo run folder (no config.json/run.json)")
    old = saved_config(run_dir)
    if recipe not in (old.recipe, str(run_dir)) and Path(recipe).stem != old.recipe:
        raise ValueError(f"{run_dir} is a run of {old.recipe!r}, not {recipe!r}: resume it as that recipe")
    new = old.with_overrides(overrides)
    changes = config_changes(old, new)
    if changes and not force:
        raise ValueError(
            f"resuming {run_dir} with a changed config ({'; '.join(changes)}): "
            "pass --force to continue anyway, or drop those --set overrides"
        )
    return new


def find_resumable(runs_dir: str, recipe: str) -> Path:
    """The newest run folder of ``recipe`` under ``runs_dir`` that did not finish."""
    parent = Path(runs_dir) / recipe
    candidates = sorted(
        (p for p in parent.iterdir() if (p / "run.json").is_file()) if parent.is_dir() else [],
        key=lambda p: p.name,
    )
    for run_dir in reversed(candidates):
        if read_json(run_dir / "run.json").get("status") != "finished":
            return run_dir
    raise FileNotFoundError(f"no unfinished run of {recipe} under {parent} to resume; train without --resume")


class RunLock:
    """An exclusive lock on a run folder; a second process gets a clear ``ValueError``."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / ".lock"
        self.handle = open(self.path, "a+")  # noqa: SIM115  (held until release)
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.seek(0)
            owner = self.handle.read().strip() or "unknown"
            self.handle.close()
            raise ValueError(
                f"run {run_dir} is in use by another process (pid {owner}); "
                "wait for it to finish or stop it first"
            ) from None
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(str(os.getpid()))
        self.handle.flush()

    def release(self) -> None:
        if not self.handle.closed:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
