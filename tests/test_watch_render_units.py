"""Renderers: plain lines off a terminal, a rich table on one; timing of imports."""
from __future__ import annotations

import io
import json
import subprocess
import sys

from stacks.watch.outcomes import Outcome, ServiceReport, WatchReport
from stacks.watch.render import PlainRenderer, RichRenderer, bar_text, progress_renderer


def _report(outcome=None, seconds=4.2, **kw):
    s = ServiceReport("st_web", "id_web", updated=2, running=3, desired=4,
                      update_state="updating", phase="updating", seconds=seconds, **kw)
    if outcome:
        s.outcome, s.reason, s.log_tail = outcome, "task exited with code 1", ["boom"]
    return WatchReport("st", [s], seconds=seconds)


def test_plain_prints_changes_only():
    out = io.StringIO()
    show = PlainRenderer(out)
    show(_report())
    show(_report(seconds=4.5))
    show(_report(Outcome.FAILED, seconds=4.6))
    show(_report(Outcome.FAILED, seconds=60))
    lines = out.getvalue().splitlines()
    assert lines == [
        "[   4.2 s] st_web: updated 2/4, running 3/4, updating",
        "[   4.6 s] st_web: updated 2/4, running 3/4, updating -> failed after 4.6 s: "
        "task exited with code 1",
        "    | boom",
    ]


def test_plain_line_when_what_it_waits_for_changes_not_when_seconds_tick():
    out = io.StringIO()
    show = PlainRenderer(out)
    wait = dict(waiting="update delay 2s (2s left)", waiting_key="delay:t1")
    show(_report(seconds=1.0, **wait))
    show(_report(seconds=1.5, **dict(wait, waiting="update delay 2s (1s left)")))
    show(_report(seconds=2.0, waiting="task st_web.3 stopping (grace period 10s, 10s left)",
                 waiting_key="stopping:t3"))
    assert out.getvalue().splitlines() == [
        "[   1.0 s] st_web: updated 2/4, running 3/4, updating; "
        "waiting for update delay 2s (2s left)",
        "[   2.0 s] st_web: updated 2/4, running 3/4, updating; "
        "waiting for task st_web.3 stopping (grace period 10s, 10s left)",
    ]


def test_plain_never_silent_longer_than_the_heartbeat():
    """Nothing changes for 20 s of watch time: a line every 5 s says what it still waits for."""
    out = io.StringIO()
    show = PlainRenderer(out, every=5.0)
    for tenth in range(0, 201, 5):            # a poll every 0.5 s
        t = tenth / 10
        show(_report(seconds=t, waiting=f"monitoring task st_web.4 ({max(0, 30 - int(t))}s left)",
                     waiting_key="monitor:t4"))
    stamps = [float(ln[1:7]) for ln in out.getvalue().splitlines()]
    assert stamps == [0.0, 5.0, 10.0, 15.0, 20.0]
    assert "monitoring task st_web.4 (10s left)" in out.getvalue().splitlines()[-1]


def test_plain_shows_a_task_problem_beside_the_wait():
    out = io.StringIO()
    PlainRenderer(out)(_report(waiting="task st_web.3 starting", waiting_key="starting:t3",
                               reason="task exited with code 1"))
    assert out.getvalue().rstrip().endswith(
        "; waiting for task st_web.3 starting; task exited with code 1")


def test_summary_and_lines_agree_on_time():
    """One clock, one rounding: the log line, the summary and the table say the same."""
    r = _report(Outcome.FAILED, seconds=1.46)
    out = io.StringIO()
    PlainRenderer(out)(r)
    assert "failed after 1.5 s" in out.getvalue()
    assert r.summary().splitlines()[0] == "stack st: exit 10 after 1.5 s"
    table = io.StringIO()
    with RichRenderer(table, width=160) as show:
        show(r)
    assert "1.5 s" in table.getvalue()


def test_not_a_tty_gives_plain():
    assert isinstance(progress_renderer(io.StringIO()), PlainRenderer)


def test_rich_table_renders():
    out = io.StringIO()
    with RichRenderer(out, width=160) as show:
        show(_report(waiting="update delay 2s (1s left)", waiting_key="delay:t1"))
    text = out.getvalue()
    assert "\u2501" * 8 + "\u2500" * 8 + " 2/4" in text      # the bar: half of the tasks updated
    assert " 3/4 " in text and "waiting for update delay 2s (1s left)" in text
    out = io.StringIO()
    with RichRenderer(out, width=160) as show:
        show(_report(Outcome.FAILED))
    text = out.getvalue()
    assert "st_web" in text and "failed" in text and "boom" in text


def test_bar_reads_without_colours():
    assert bar_text(0, 4, width=8) == ("", "\u2500" * 8)
    assert bar_text(3, 4, width=8) == ("\u2501" * 6, "\u2500" * 2)
    assert bar_text(4, 4, width=8, ascii_only=True) == ("#" * 8, "")
    assert bar_text(0, 0, width=4) == ("\u2501" * 4, "")    # nothing desired: nothing left to do


def test_rich_table_shows_brackets_in_task_errors_as_text():
    """A task error like `invalid mount config [/data]` or a closing tag `[/]` is text, not
    markup: it neither crashes the table nor disappears from it."""
    out = io.StringIO()
    with RichRenderer(out, width=200) as show:
        r = _report(Outcome.FAILED)
        r.services[0].reason = "starting container failed: [/] bad [bold] mount [/data]"
        show(r)
    text = out.getvalue()
    assert "[/] bad [bold] mount [/data]" in text


def test_watch_modules_import_light():
    code = ("import sys, stacks.watch.watcher, stacks.operations.rollback, "
            "provision.swarm.lock, stacks.operations.audit, "
            "stacks.watch.render; bad = [m for m in ('docker', 'paramiko', 'rich', 'requests') "
            "if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=__file__.rsplit("/tests/", 1)[0], check=True).stdout.strip()
    assert out == "[]"


def test_json_lines_are_the_plain_lines_events_with_the_same_fields():
    reports = [_report(seconds=1.0, waiting="update delay 2s (2s left)", waiting_key="delay:t1"),
               _report(seconds=1.5, waiting="update delay 2s (1s left)", waiting_key="delay:t1"),
               _report(Outcome.FAILED, seconds=2.0)]
    plain, js = io.StringIO(), io.StringIO()
    show_plain, show_json = PlainRenderer(plain), progress_renderer(js, as_json=True)
    for r in reports:
        show_plain(r)
        show_json(r)
    events = [json.loads(ln) for ln in js.getvalue().splitlines()]
    assert len(events) == 2 == len([ln for ln in plain.getvalue().splitlines()
                                    if not ln.startswith("    |")])
    first, last = events
    assert first["event"] == "watch" and first["stack"] == "st" and first["name"] == "st_web"
    assert (first["updated"], first["running"], first["desired"], first["phase"]) == \
        (2, 3, 4, "updating")
    assert first["waiting"] == "update delay 2s (2s left)" and first["outcome"] is None
    assert last["outcome"] == "failed" and last["reason"] == "task exited with code 1"
    assert last["seconds"] == 2.0 and last["waiting"] == ""
