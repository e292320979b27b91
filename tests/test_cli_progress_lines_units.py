"""Host step lines come from many threads at once (engines, joins, labels): each is written
whole, never run together with another thread's line."""
from __future__ import annotations

import re
import sys
import threading

import cli
from provision.base.progress import HostProgress


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


def test_json_mode_prints_the_watch_as_json_lines_on_stderr(capsys):
    """--json keeps stdout for the result document; the watch goes to stderr as JSON lines
    with the report's fields (the plain lines' numbers and words)."""
    import json

    from stacks import events as ev
    from stacks.watch.outcomes import ServiceReport, WatchReport
    render = cli._Renderer(as_json=True)
    s = ServiceReport("st_web", "id_web", updated=1, running=3, desired=4, phase="updating",
                      waiting="task st_web.2 stopping (grace period 10s, 9s left)",
                      waiting_key="stopping:t2", seconds=3.0)
    report = WatchReport("st", [s], seconds=3.0)
    render(HostProgress("host-1", "engine ready"))
    render(ev.WatchStarted("st", ["st_web"]))
    render(ev.WatchProgress(report))
    render(ev.WatchFinished(report))
    out, err = capsys.readouterr()
    assert out == ""
    (line,) = err.splitlines()
    event = json.loads(line)
    assert (event["updated"], event["running"], event["desired"]) == (1, 3, 4)
    assert event["waiting"].startswith("task st_web.2 stopping")
