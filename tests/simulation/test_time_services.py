"""Availability processes, round deadlines and over-selection on hand-computed cases."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from flowerbed.core.errors import ConfigError
from flowerbed.run.config import parse_run_config
from flowerbed.run.runner import run_experiment
from flowerbed.simulation.availability import Diurnal, OnOff, Trace, build_availability
from flowerbed.simulation.clock import Clock
from flowerbed.simulation.deadline import Deadline
from tests.conftest import ROOT, tiny

TRACE = ROOT / "examples" / "traces" / "availability.csv"
DAY = 86400.0


# --- availability


def test_diurnal_windows_follow_the_phases() -> None:
    d = Diurnal(3, 100.0, 0.25, seed=0)
    d.phase = np.array([0.0, 0.5, 0.9])
    assert d.online(0.0).tolist() == [True, False, False]
    assert d.online(10.0).tolist() == [True, False, True]  # client 2 wraps to 0.0
    # client 0 leaves at 25, client 1 joins at 50, client 2 joins at 10: the first is 10
    assert d.next_change(0.0) == pytest.approx(10.0)


def test_the_example_trace_maps_devices_onto_clients() -> None:
    t = Trace.load(str(TRACE), 6, DAY)  # client k is device k mod 4
    assert t.online(3000.0).tolist() == [True, False, False, True, True, False]
    assert t.online(DAY + 3700.0).tolist() == [True, True, False, True, True, True]  # repeats
    assert t.next_change(3000.0) == pytest.approx(3600.0)  # device 1 comes online
    assert t.next_change(80000.0) == pytest.approx(DAY)  # device 0's night ends at 86400


@pytest.mark.parametrize("text, why", [
    ("0,0,10\n", "header"),
    ("device,start_s,end_s\n0,5,2\n", "start_s < end_s"),
    ("device,start_s,end_s\n0,0,90000\n", "past availability-period-s"),
    ("device,start_s,end_s\nx,0,1\n", "data line 2"),
])
def test_bad_traces_name_the_key(tmp_path: Path, text: str, why: str) -> None:
    path = tmp_path / "t.csv"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        Trace.load(str(path), 2, DAY)
    assert err.value.key == "availability-trace" and why in err.value.allowed


def test_on_off_is_a_pure_function_of_time_and_stationary() -> None:
    a, b = OnOff(200, 1.0, 3.0, seed=7), OnOff(200, 1.0, 3.0, seed=7)
    times = np.linspace(0.0, 500.0, 400)
    forward = [a.online(t) for t in times]
    backward = [b.online(t) for t in times[::-1]][::-1]  # asked in the other order
    assert all((x == y).all() for x, y in zip(forward, backward, strict=True))
    assert np.mean(forward) == pytest.approx(0.25, abs=0.03)  # on / (on + off)
    s = a.switches[0]  # client 0 flips exactly at its switch times
    assert a.online(s[0] - 1e-9)[0] == a.starts_online[0] != a.online(s[0])[0]
    assert a.next_change(0.0) == pytest.approx(a.switches[:, 0].min())


def test_a_round_reaches_only_the_clients_online_at_its_start() -> None:
    cfg = parse_run_config(tiny(**{"num-clients": 10, "num-server-rounds": 4,
                                   "step-seconds": 10.0, "local-steps": 1,
                                   "availability": "diurnal", "availability-period-s": 40.0}))
    res = run_experiment(cfg)
    avail = build_availability(cfg, 10)  # seeded: the run's own process
    for before, rec in zip(res.records, res.records[1:], strict=False):
        assert rec["participants"] == avail.online(before["sim_time_s"]).sum()
    assert len({r["participants"] for r in res.records[1:]}) > 1  # it does change


# --- deadlines and over-selection


def clock_with(durations: list[float], **over) -> Clock:
    cfg = parse_run_config(tiny(**{"num-clients": len(durations), "step-seconds": 1.0,
                                   **over}))
    clock = Clock(cfg, len(durations))
    clock.profiles.speed = 1.0 / np.asarray(durations)  # one 1 s step takes duration_k
    return clock


def late(clock: Clock, deadline: float, over: float, nodes=(0, 1, 2, 3)):
    d = Deadline(clock, deadline, over, steps=lambda k: 1)
    out = d.late(1, list(nodes), [0] * len(nodes), [0] * len(nodes), 4)
    return {nodes[i] for i in out}, d.seconds[1]


def test_who_is_late_and_who_is_kept() -> None:
    clock = clock_with([4.0, 8.0, 16.0, 2.0])
    assert late(clock, 10.0, 0.0) == ({2}, 10.0)  # 16 s > D; the server waits out D
    assert late(clock, 20.0, 0.0) == (set(), 16.0)  # all in time: the last one ends it
    # over-selection 1: keep the first ceil(4 / 2) = 2 by finish time (clients 3 and 0)
    assert late(clock, 0.0, 1.0) == ({1, 2}, 4.0)
    # both: only client 3 is in by D = 3 (fewer than m), so the round lasts D
    assert late(clock, 3.0, 1.0) == ({0, 1, 2}, 3.0)
    # a client missing (dropped: not among the replies) makes the server wait out D
    assert late(clock, 10.0, 0.0, nodes=(0, 3)) == (set(), 10.0)


def test_the_shared_server_link_delays_everyone() -> None:
    """4 clients each sent 1 Mbit over a 4 Mbit/s server link: every download takes
    4 x 1e6 / 4e6 = 1 s, so finish times are 1 + (4, 8, 16, 2)."""
    clock = clock_with([4.0, 8.0, 16.0, 2.0], **{"server-down-mbps": 4.0})
    d = Deadline(clock, 9.0, 0.0, steps=lambda k: 1)
    assert d.finish_times([0, 1, 2, 3], [125_000] * 4, [0] * 4, 4) == pytest.approx(
        [5.0, 9.0, 17.0, 3.0])
    assert d.late(1, [0, 1, 2, 3], [125_000] * 4, [0] * 4, 4) == {2}  # 9 <= D = 9


def test_a_run_with_a_deadline_discards_the_slow_clients() -> None:
    cfg = parse_run_config(tiny(**{"num-clients": 10, "num-server-rounds": 3,
                                   "step-seconds": 1.0, "speed-spread": 0.8,
                                   "local-steps": 2, "round-deadline-s": 2.5}))
    res = run_experiment(cfg)
    speed = Clock(cfg, 10).profiles.speed  # seeded: the run's devices
    slow = int((2 / speed > 2.5).sum())
    assert 0 < slow < 10
    for rec in res.records[1:]:  # every client is sampled every round
        assert rec["late"] == slow and rec["participants"] == 10 - slow
        assert rec["sim_round_s"] == 2.5


def test_over_selection_keeps_the_fastest_m() -> None:
    cfg = parse_run_config(tiny(**{"num-clients": 10, "num-server-rounds": 2,
                                   "step-seconds": 1.0, "speed-spread": 0.8,
                                   "local-steps": 1, "over-selection": 0.25}))
    res = run_experiment(cfg)
    speed = np.sort(Clock(cfg, 10).profiles.speed)[::-1]
    for rec in res.records[1:]:
        assert rec["participants"] == math.ceil(10 / 1.25) and rec["late"] == 2
        assert rec["sim_round_s"] == pytest.approx(1.0 / speed[7])  # the 8th fastest


@pytest.mark.parametrize("over, key", [
    ({"availability": "on-off"}, "availability"),  # no clock
    ({"round-deadline-s": 5.0}, "round-deadline-s"),
    ({"step-seconds": 1.0, "round-deadline-s": 5.0, "straggler-rate": 0.1},
     "straggler-rate"),
])
def test_time_config_is_refused_clearly(over, key) -> None:
    with pytest.raises(ConfigError) as err:
        parse_run_config(tiny(**over))
    assert err.value.key == key
