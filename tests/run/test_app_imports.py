"""The Flower apps' modules load without torch: ``flwr-simulation`` loads both under one
lock before it starts Ray, so whatever they import at module level delays Ray's start
(numpy comes with Flower itself)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_server_and_client_app_modules_import_no_torch() -> None:
    code = ("import sys, flowerbed.run.server_app, flowerbed.run.client_app\n"
            "heavy = sorted(m for m in ('torch', 'scipy', 'flowerbed.run.runner',"
            " 'flowerbed.clients.worker') if m in sys.modules)\n"
            "print(','.join(heavy))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=True)
    assert out.stdout.strip() == ""
