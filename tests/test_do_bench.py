"""The bench runs end to end on the emulator and ends with the agreed summary line."""
from __future__ import annotations

import importlib.util
import os
import re

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench",
                     "digitalocean.py")


@pytest.fixture
def bench():
    spec = importlib.util.spec_from_file_location("swarmsmith_bench_digitalocean", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_last_line(bench, capsys):
    assert bench.main(["--delay", "0.2", "--poll", "0.1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    m = re.fullmatch(r"droplets=30 requests=(\d+) create_requests=(\d+) seconds=(\d+\.\d\d)",
                     lines[-1])
    assert m, lines[-1]
    requests, creates = int(m.group(1)), int(m.group(2))
    assert creates == 3                       # 30 names, at most 10 per request
    assert requests < 30                      # well under one request per droplet
    assert any(line.startswith("--- 10 droplets") for line in lines)
