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


def test_bench_summary_lines(bench, capsys):
    assert bench.main(["--sizes", "30,45"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    pattern = (r"droplets=(\d+) requests=(\d+) create_requests=(\d+) "
               r"simulated_seconds=(\d+\.\d)$")
    for line, prefix, size in ((lines[-3], "", 30), (lines[-2], "", 45),
                               (lines[-1], "lost answer: ", 30)):
        m = re.match(prefix + pattern, line)
        assert m, line
        droplets, requests, creates, seconds = (int(m.group(1)), int(m.group(2)),
                                                int(m.group(3)), float(m.group(4)))
        assert droplets == size
        assert creates == -(-size // 10)      # at most 10 per request, none sent twice
        assert requests < 2 * size            # well under two requests per droplet
        assert 45 <= seconds < 45 + 3 * 5     # active after 45 s, seen within a few polls
    assert any(line.startswith("--- 30 droplets, the first create answer lost") for line in lines)
