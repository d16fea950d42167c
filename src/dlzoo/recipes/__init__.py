"""Recipes: one TOML file per experiment, shipped inside the package.

A recipe's tables are the sections of ``RunConfig`` (see ``dlzoo.config``);
its ``[meta]`` table carries its evidence: the source it reproduces, the
source's number, the target, and the result dlzoo measured with the command
that measured it.
"""

from __future__ import annotations

import fnmatch
import tomllib
from importlib import resources
from pathlib import Path

from dlzoo.config import RunConfig
from dlzoo.registry import unknown_name_message


def recipe_names() -> list[str]:
    files = resources.files(__name__).iterdir()
    return sorted(f.name.removesuffix(".toml") for f in files if f.name.endswith(".toml"))


def recipe_path(name: str) -> Path:
    if name not in recipe_names():
        raise ValueError(unknown_name_message("recipe", name, recipe_names()))
    return Path(str(resources.files(__name__) / f"{name}.toml"))


def load_recipe(name: str, overrides: list[str] | None = None) -> RunConfig:
    """The validated config of recipe ``name`` (or of a TOML file path) with ``overrides`` applied."""
    path = Path(name)
    if name.endswith(".toml"):
        if not path.is_file():
            raise FileNotFoundError(f"recipe file {name} not found")
        recipe = path.stem
    else:
        path, recipe = recipe_path(name), name
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"recipe {path} is not valid TOML: {error}") from None
    try:
        cfg = RunConfig.from_dict(raw, recipe)
    except (TypeError, ValueError) as error:
        raise ValueError(f"recipe {recipe}: {error}") from None
    return cfg.with_overrides(overrides or [])


def list_recipes(pattern: str = "*") -> list[RunConfig]:
    """Every shipped recipe whose name matches the shell-style ``pattern``."""
    return [load_recipe(name) for name in recipe_names() if fnmatch.fnmatch(name, pattern)]
