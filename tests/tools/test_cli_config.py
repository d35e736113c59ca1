"""`-c` takes files and key=value overrides, repeatable; later ones win."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowerbed.core.errors import ConfigError
from flowerbed.tools.cli import resolve_config
from tests.conftest import ROOT


def test_files_and_overrides_combine_later_wins(tmp_path: Path) -> None:
    first = tmp_path / "a.toml"
    first.write_text('num-clients = 12\nnum-server-rounds = 7\nwandb-group = "a \\"b\\" \\\\ c"\n')
    second = tmp_path / "b.toml"
    second.write_text("num-clients = 30\n")
    cfg = resolve_config(ROOT, [str(first), "num-server-rounds=3 lr=0.2", str(second)])
    assert (cfg.num_clients, cfg.num_server_rounds, cfg.lr) == (30, 3, 0.2)
    assert cfg.wandb_group == 'a "b" \\ c'
    assert cfg.fraction_train == 0.2  # the pyproject default underneath


def test_a_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        resolve_config(ROOT, [str(tmp_path / "nope.toml")])
    assert "nope.toml" in str(err.value) and "cannot read this run-config file" in str(err.value)


@pytest.mark.parametrize("command", ["run", "check"])
def test_help_says_c_takes_a_file_and_repeats(command: str) -> None:
    from flowerbed.tools.cli import build_parser

    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]
    text = " ".join(sub.format_help().split())
    assert "run-config file (*.toml)" in text and "later wins" in text
