"""The console keeps flowerbed's lines, errors and tracebacks of the flwr run stream."""

from __future__ import annotations

import io

from flowerbed.run.logging_setup import QUIET, VERBOSE
from flowerbed.tools.console_filter import ConsoleFilter, FilteredEcho

# captured from `flowerbed run .` (flwr 1.41, Ray backend), colour codes included
NOISE = [
    "\n",
    "Flower configuration not found. Created default configuration at /tmp/h/config.toml\n",
    "Using SuperLink: local (127.0.0.1:43073)\n",
    "Successfully started run 13923823700849737105\n",
    "\x1b[92mINFO \x1b[0m:      Starting logstream for run_id `13923823700849737105`\n",
    "\x1b[92mINFO \x1b[0m:      Starting Flower Simulation\n",
    "\x1b[93mWARNING \x1b[0m:   Since flwr 1.32, default simulated SuperNodes changed from 10 "
    "to 2.\n",
    "\x1b[92mINFO \x1b[0m:      Federation `@none/default` (2 simulated SuperNodes)\n",
    "\x1b[92mINFO \x1b[0m:      To change federation size, use the following command:\n",
    "\x1b[92mINFO \x1b[0m:      \tflwr federation simulation-config @none/default <superlink> "
    "--num-supernodes <N>\n",
    "Successfully installed flowerbed to /tmp/h/apps/flowerbed.flowerbed.0.1.0.df540caa.\n",
    "\x1b[93mWARNING \x1b[0m:   fraction_evaluate is set to 0.0. Federated evaluation will be "
    "skipped.\n",
    "/venv/lib/python3.11/site-packages/ray/_private/worker.py:2051: FutureWarning: Tip: In "
    "future versions of Ray, Ray will no longer override accelerator visible devices env var "
    "if num_gpus=0 or num_gpus=None (default). To enable this behavior and turn off this "
    "error message, set RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO=0\n",
    "  warnings.warn(\n",
    "(pid=28278) [mutex.cc : 452] RAW: Lock blocking 0x5629911270b0   @ 0x7f8101598752\n",
    "\x1b[36m(ClientAppActor pid=25854)\x1b[0m \x1b[93mWARNING \x1b[0m:   Manually terminating "
    "ClientAppActor\n",
    "\x1b[92mINFO \x1b[0m:      \n",
]
OWN = [
    "14:39:50 flowerbed data digits: 100 clients, 1437 train / 360 test examples, 10 classes\n",
    "14:39:57 flowerbed run fedavg-digits: 20 rounds, outputs in /tmp/out/fedavg-digits\n",
    "14:40:15 flowerbed round   1/20  acc 0.1694  loss 2.2389  train_loss 2.0084  clients 20"
    "  elapsed 00:17  eta --:--\n",
    "14:40:20 flowerbed outputs: /tmp/out/fedavg-digits\n",
    "14:40:20 flowerbed WARNING fraction-train does not apply to this strategy\n",
]
ERRORS = [
    "14:39:50 flowerbed ERROR lr = -1.0 is invalid: must be > 0\n",
    "\x1b[91mERROR \x1b[0m:     ServerApp thread raised an exception: boom\n",
    "\x1b[36m(ClientAppActor pid=25854)\x1b[0m \x1b[91mERROR \x1b[0m:     worker died\n",
]
TRACEBACK = [
    "Traceback (most recent call last):\n",
    '  File "/app/flowerbed/run/runner.py", line 10, in run_experiment\n',
    "    data = load_federation(cfg)\n",
    "\n",
    "During handling of the above exception, another exception occurred:\n",
    '  File "/app/flowerbed/clients/data.py", line 5, in load_federation\n',
    "    raise ValueError('bad')\n",
    "ValueError: bad\n",
]


def kept(lines: list[str], verbosity: int = 0) -> list[str]:
    f = ConsoleFilter(verbosity)
    return [line for line in lines if f.keep(line)]


def test_default_keeps_flowerbed_lines_errors_and_tracebacks_only() -> None:
    stream = NOISE[:12] + OWN + NOISE[12:] + ERRORS + TRACEBACK + NOISE[:3]
    assert kept(stream) == OWN + ERRORS + TRACEBACK


def test_noise_alone_is_dropped_and_verbose_keeps_everything() -> None:
    assert kept(NOISE) == []
    assert kept(NOISE + OWN, VERBOSE) == NOISE + OWN


def test_quiet_keeps_errors_and_tracebacks_only() -> None:
    assert kept(OWN + NOISE + ERRORS + TRACEBACK + OWN, QUIET) == ERRORS + TRACEBACK


def test_traceback_ends_at_the_exception_line() -> None:
    assert kept([*TRACEBACK, "  warnings.warn(\n", NOISE[5]]) == TRACEBACK


def test_echo_strips_colour_codes_when_not_a_terminal() -> None:
    out = io.StringIO()
    echo = FilteredEcho(out)
    for line in NOISE + ERRORS[1:2] + OWN[:1]:
        echo.write(line)
    assert out.getvalue() == ("ERROR :     ServerApp thread raised an exception: boom\n"
                              + OWN[0])
    tty = io.StringIO()
    tty.isatty = lambda: True  # type: ignore[method-assign]
    FilteredEcho(tty).write(ERRORS[1])
    assert tty.getvalue() == ERRORS[1]
