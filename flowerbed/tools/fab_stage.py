"""A small copy of the app folder for ``flwr run`` to build its FAB from.

``flwr run <app>`` lists every file under ``<app>`` (resolving each path) before it
applies ``.gitignore`` and ``fab-include``; with the virtual environment inside the app
folder that is ~50,000 files and ~4.5 s per run. The stage holds only the files the FAB
can contain: folders that ``.gitignore`` or Flower's own rules exclude are never entered,
and with ``fab-include`` only the matching files are taken. Flower then applies its rules
to the stage as it would to the app folder, so the FAB (and its hash) is the same.
"""

from __future__ import annotations

import os
import shutil
import tomllib
import warnings
from pathlib import Path

import pathspec

# folders Flower never puts into a FAB (flwr.common.constant.FAB_EXCLUDE_PATTERNS)
ALWAYS_PRUNED = {".flwr", ".git", "__pycache__", ".venv", "venv", "env", "ENV", "env.bak",
                 "venv.bak", "build", "eggs", ".eggs", "lib", "lib64", "parts"}
ALWAYS_COPIED = ("pyproject.toml", ".gitignore")


def _spec(lines: list[str]) -> pathspec.PathSpec:
    """Patterns read the way Flower reads them (``flwr.cli.utils.build_pathspec``)."""
    with warnings.catch_warnings():  # pathspec deprecates the name Flower uses
        warnings.simplefilter("ignore", DeprecationWarning)
        return pathspec.PathSpec.from_lines("gitwildmatch", lines)


def _user_include(app_dir: Path) -> pathspec.PathSpec | None:
    data = tomllib.loads((app_dir / "pyproject.toml").read_text())
    patterns = data.get("tool", {}).get("flwr", {}).get("app", {}).get("fab-include")
    return _spec(list(patterns)) if patterns else None


def stage_files(app_dir: Path) -> list[str]:
    """Relative POSIX paths of the files the stage gets."""
    gitignore = app_dir / ".gitignore"
    ignored = _spec(gitignore.read_text().splitlines() if gitignore.exists() else [])
    include = _user_include(app_dir)
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(app_dir, followlinks=False):
        rel_dir = Path(dirpath).relative_to(app_dir).as_posix()
        prefix = "" if rel_dir == "." else rel_dir + "/"
        dirnames[:] = [d for d in dirnames if d not in ALWAYS_PRUNED
                       and not (Path(dirpath) / d).is_symlink()
                       and not ignored.match_file(prefix + d + "/")]
        for name in filenames:
            rel = prefix + name
            if (Path(dirpath) / name).is_symlink() or ignored.match_file(rel):
                continue
            if rel in ALWAYS_COPIED or include is None or include.match_file(rel):
                out.append(rel)
    return out


def stage_app(app_dir: Path, dest: Path) -> Path:
    """Fill ``dest`` (emptied first) with the app's FAB files; returns ``dest``."""
    app_dir = Path(app_dir).resolve()
    if dest.exists():
        shutil.rmtree(dest)
    for rel in stage_files(app_dir):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(app_dir / rel, target)
        except OSError:  # another file system
            shutil.copy2(app_dir / rel, target)
    return dest


__all__ = ["stage_app", "stage_files"]
