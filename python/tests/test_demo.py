"""The README's second command, `python -m kpush.demo`, runs (bounded)."""

from __future__ import annotations

import re
import subprocess
import sys


def test_demo_runs_against_its_embedded_broker():
    out = subprocess.run(
        [sys.executable, "-m", "kpush.demo", "--coroutines", "50", "--seconds", "0.5"],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("embedded broker on 127.0.0.1:"), out.stdout
    m = re.search(r"^([\d,]+) records acknowledged by 50 coroutines", out.stdout, re.M)
    assert m and int(m.group(1).replace(",", "")) > 0, out.stdout
    sent = re.search(r"'records_sent': (\d+)", out.stdout)
    assert sent and int(sent.group(1)) > int(m.group(1).replace(",", "")), out.stdout  # + the warm-up
