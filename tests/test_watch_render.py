"""Renderers: plain lines off a terminal, a rich table on one; timing of imports."""
from __future__ import annotations

import io
import subprocess
import sys

from stacks.watch.outcomes import Outcome, ServiceReport, WatchReport
from stacks.watch.render import PlainRenderer, RichRenderer, progress_renderer


def _report(outcome=None):
    s = ServiceReport("st_web", "id_web", running=2, desired=3, update_state="updating")
    if outcome:
        s.outcome, s.reason, s.log_tail, s.seconds = outcome, "task exited with code 1", ["boom"], 4.2
    return WatchReport("st", [s])


def test_plain_prints_changes_only():
    out = io.StringIO()
    show = PlainRenderer(out, clock=lambda fmt: "12:00:00")
    show(_report())
    show(_report())
    show(_report(Outcome.FAILED))
    lines = out.getvalue().splitlines()
    assert lines == [
        "12:00:00 st_web: 2/3 running, update updating",
        "12:00:00 st_web: 2/3 running, update updating -> failed after 4.2 s: task exited with code 1",
        "    | boom",
    ]


def test_not_a_tty_gives_plain():
    assert isinstance(progress_renderer(io.StringIO()), PlainRenderer)


def test_rich_table_renders():
    out = io.StringIO()
    with RichRenderer(out) as show:
        show(_report())
        show(_report(Outcome.FAILED))
    text = out.getvalue()
    assert "st_web" in text and "failed" in text and "boom" in text


def test_rich_table_shows_brackets_in_task_errors_as_text():
    """A task error like `invalid mount config [/data]` or a closing tag `[/]` is text, not
    markup: it neither crashes the table nor disappears from it."""
    out = io.StringIO()
    with RichRenderer(out) as show:
        r = _report(Outcome.FAILED)
        r.services[0].reason = "starting container failed: [/] bad [bold] mount [/data]"
        show(r)
    text = out.getvalue()
    assert "[/] bad [bold] mount [/data]" in text


def test_watch_modules_import_light():
    code = ("import sys, stacks.watch.watcher, stacks.operations.rollback, "
            "provision.swarm_lock, stacks.operations.audit, "
            "stacks.watch.render; bad = [m for m in ('docker', 'paramiko', 'rich', 'requests') "
            "if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=__file__.rsplit("/tests/", 1)[0], check=True).stdout.strip()
    assert out == "[]"
