"""Host step lines come from many threads at once (engines, joins, labels): each is written
whole, never run together with another thread's line."""
from __future__ import annotations

import re
import sys
import threading

import cli
from provision.progress import HostProgress


def test_lines_from_many_threads_stay_whole(capsys):
    render = cli._Renderer()
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)         # switch threads as often as possible
    try:
        def emit(i):
            for n in range(300):
                render(HostProgress(f"host-{i}", f"step {n}"))
        threads = [threading.Thread(target=emit, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 8 * 300
    pattern = re.compile(r"^\[ *\d+\.\d\ds\] host-\d +step \d+$")
    assert [x for x in lines if not pattern.match(x)] == []
