"""flwr run builds the FAB from a small stage: the same FAB as from the app folder."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from flwr.cli.build import build_fab_from_disk

from flowerbed.tools.fab_stage import stage_app, stage_files
from tests.conftest import ROOT


def test_stage_gives_the_same_fab_without_the_venv(tmp_path: Path) -> None:
    files = stage_files(ROOT)
    assert "pyproject.toml" in files
    assert "flowerbed/tools/fab_stage.py" in files
    assert not any(f.startswith((".venv/", "tests/", ".git/")) for f in files)
    stage = stage_app(ROOT, tmp_path / "stage")
    a = zipfile.ZipFile(io.BytesIO(build_fab_from_disk(ROOT)))
    b = zipfile.ZipFile(io.BytesIO(build_fab_from_disk(stage)))
    assert sorted(a.namelist()) == sorted(b.namelist())
    assert all(a.read(n) == b.read(n) for n in a.namelist())


def test_stage_without_fab_include_keeps_unignored_files(tmp_path: Path) -> None:
    app = tmp_path / "app"
    (app / "pkg").mkdir(parents=True)
    (app / "outputs" / "run").mkdir(parents=True)
    (app / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (app / ".gitignore").write_text("outputs/\n*.log\n")
    (app / "pkg" / "m.py").write_text("x = 1\n")
    (app / "pkg" / "debug.log").write_text("noise\n")
    (app / "outputs" / "run" / "m.py").write_text("x = 2\n")
    assert sorted(stage_files(app)) == [".gitignore", "pkg/m.py", "pyproject.toml"]
