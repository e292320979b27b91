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
    for line, prefix in ((lines[-2], ""), (lines[-1], "slow: ")):
        m = re.match(prefix + r"droplets=30 requests=(\d+) create_requests=(\d+) "
                     r"seconds=(\d+\.\d\d)", line)
        assert m, line
        requests, creates = int(m.group(1)), int(m.group(2))
        assert creates == 3                   # 30 names, at most 10 per request, no duplicates
        assert requests < 30                  # well under one request per droplet
    assert lines[-1].endswith("list_lag=0.2")
    assert any(line.startswith("--- 10 droplets") for line in lines)
    assert any("as slow as the real API" in line for line in lines)
