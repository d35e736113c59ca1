"""Values that used to pass the config check and fail minutes later (or never), now rejected
up front with the key, the value and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowerbed.run.config import ConfigError, check_paths, parse_run_config
from flowerbed.run.runner import run_experiment
from flowerbed.tools.cli import main
from tests.conftest import tiny
from tests.tools.test_cli_failures import APP


def _rejects(raw: dict, key: str, value: object, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_run_config(raw)
    assert (info.value.key, info.value.value) == (key, value)
    assert fragment in str(info.value)


@pytest.mark.parametrize("seed", [-1, 2**32, 2**40])
def test_seeds_outside_numpys_range(seed: int) -> None:
    _rejects({"seed": seed}, "seed", seed, "0..4294967295")


@pytest.mark.parametrize("seed", [0, 2**32 - 1])
def test_seeds_at_the_ends_of_the_range(seed: int) -> None:
    assert parse_run_config({"seed": seed}).seed == seed


@pytest.mark.parametrize(("raw", "key", "value", "fragment"), [
    ({"strategy": "dsgd", "topology": "torus", "num-clients": 7}, "topology", "torus",
     "torus needs n = r * c"),
    ({"strategy": "dsgd", "topology": "torus", "num-clients": 13}, "topology", "torus",
     "over the 13 nodes"),
    ({"strategy": "dsgd", "topology": "random-regular", "num-clients": 9, "degree": 3},
     "degree", 3, "n * degree even"),
    ({"strategy": "dsgd", "topology": "random-regular", "num-clients": 6, "degree": 6},
     "degree", 6, "1..n-1 = 5"),
    # Teleportation's topology is over its k = min(k-active, n) slots
    ({"strategy": "teleportation", "topology": "torus", "num-clients": 20, "k-active": 7},
     "topology", "torus", "over the 7 active slots"),
    ({"strategy": "teleportation", "topology": "random-regular", "num-clients": 20,
      "k-active": 5, "degree": 3}, "degree", 3, "n * degree even"),
    ({"strategy": "teleportation-tuned", "topology": "torus", "num-clients": 20},
     "topology", "torus", "candidate k"),
    ({"strategy": "paris", "experts": 12, "num-clients": 10}, "experts", 12,
     "<= num-clients (10)"),
    ({"strategy": "gossip", "num-clients": 1}, "num-clients", 1, "at least 2 nodes"),
    ({"strategy": "dsgd", "num-clients": 1}, "num-clients", 1, "at least 2 nodes"),
])
def test_impossible_strategy_setups(raw: dict, key: str, value: object, fragment: str
                                    ) -> None:
    _rejects(raw, key, value, fragment)


def test_possible_topologies_still_pass() -> None:
    assert parse_run_config({"strategy": "dsgd", "topology": "torus", "num-clients": 12})
    assert parse_run_config({"strategy": "dsgd", "topology": "random-regular",
                             "num-clients": 10, "degree": 3})
    assert parse_run_config({"strategy": "teleportation", "topology": "torus",
                             "num-clients": 100, "k-active": 9})


@pytest.mark.parametrize("name", ["../../escaped", "a/b", "/abs", "a\\b", "..", ".", "...",
                                  ".hidden", " ", "a\0b"])
def test_a_run_name_is_one_folder_name(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_run_config({"run-name": name})
    assert info.value.key == "run-name" and info.value.value == name


@pytest.mark.parametrize("name", ["", "e2e", "lr=0.1,seed=2", "run.v2", "a..b"])
def test_ordinary_run_names_pass(name: str) -> None:
    assert parse_run_config({"run-name": name}).run_name == name


def test_resume_from_a_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                      ) -> None:
    missing = tmp_path / "gone"
    with pytest.raises(ConfigError) as info:
        check_paths(parse_run_config({"resume-from": str(missing)}))
    assert info.value.key == "resume-from" and "no such run folder" in str(info.value)
    assert main(["check", str(APP), "-c", f'resume-from="{missing}"']) == 2
    assert f"resume-from = '{missing}'" in capsys.readouterr().err


def test_output_dir_naming_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "results.txt"
    blocker.write_text("not a folder")
    for out in (blocker, blocker / "sub"):
        with pytest.raises(ConfigError) as info:
            check_paths(parse_run_config({"output-dir": str(out)}))
        assert info.value.key == "output-dir" and "is a file" in str(info.value)
    assert main(["check", str(APP), "-c", f'output-dir="{blocker}"']) == 2
    assert f"output-dir = '{blocker}'" in capsys.readouterr().err
    # relative to the app folder, as flowerbed run resolves it
    (tmp_path / "outputs").write_text("")
    with pytest.raises(ConfigError, match="output-dir = 'outputs'"):
        check_paths(parse_run_config({}), tmp_path)
    check_paths(parse_run_config({"tracking": False}), tmp_path)  # nothing is written there


def test_a_run_refuses_a_file_as_output_dir_before_any_work(tmp_path: Path) -> None:
    blocker = tmp_path / "f"
    blocker.write_text("")
    cfg = parse_run_config(tiny(tracking=True, output_dir=str(blocker)))
    with pytest.raises(ConfigError, match="is a file"):
        run_experiment(cfg)
