"""Show watch progress: a live table on a terminal, plain lines otherwise, JSON lines for
`--json` (docs/rollouts.md shows each column and phrase).

Renderers are progress callbacks for watch_stack(on_progress=...) and know
nothing about swarm; they write to the stream they are given (the command line
gives stderr).  Use as a context manager:

    with progress_renderer(stream) as show:
        report = watch_stack(api, stack, on_progress=show)
"""
from __future__ import annotations

from stacks.watch.outcomes import ServiceReport, WatchReport, elapsed

_STYLE = {"converged": "green", "done": "green", "rolled_back": "yellow",
          "paused": "red", "failed": "red", "timed_out": "red"}
HEARTBEAT = 5.0      # seconds without a line before the plain renderer says it still waits


def now_text(s: ServiceReport) -> str:
    """The last column: the outcome's reason once finished, else what swarm waits for (and a
    task problem seen on the way, when that is something else)."""
    if s.finished:
        return s.reason
    parts = [f"waiting for {s.waiting}"] if s.waiting else []
    if s.reason and s.reason not in s.waiting:
        parts.append(s.reason)
    return "; ".join(parts)


def bar_text(done: int, total: int, width: int = 16, ascii_only: bool = False) -> tuple[str, str]:
    """(filled, rest) of a bar of `width` cells for done/total: two different characters, so
    the bar reads the same without colours (a log, a screen capture)."""
    full = width if total <= 0 else min(width, round(width * done / total))
    on, off = ("#", "-") if ascii_only else ("\u2501", "\u2500")
    return on * full, off * (width - full)


class PlainRenderer:
    """Log lines: one per service when its counts, phase, what it waits for or its outcome
    change, and again after `every` seconds without one (what it still waits for, with the
    seconds left), so a log is never silent for long.  Times are the watch's (`elapsed`)."""

    def __init__(self, stream, every: float = HEARTBEAT):
        self.stream = stream
        self.every = every
        self.last: dict[str, tuple] = {}     # service id -> (what was shown, when)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def due(self, report: WatchReport) -> list[ServiceReport]:
        """The services to show now: changed, or unchanged for `every` seconds and not done."""
        out = []
        for s in report.services:
            key = (s.updated, s.running, s.desired, s.phase, s.waiting_key, s.outcome)
            shown = self.last.get(s.service_id)
            if shown is not None and shown[0] == key \
                    and (s.finished or report.seconds - shown[1] < self.every):
                continue
            self.last[s.service_id] = (key, report.seconds)
            out.append(s)
        return out

    def __call__(self, report: WatchReport) -> None:
        for s in self.due(report):
            line = f"[{elapsed(s.seconds):>8}] {s.name}: {s.progress_text()}"
            if s.outcome:
                line += f" -> {s.outcome} after {elapsed(s.seconds)}"
                if s.reason:
                    line += f": {s.reason}"
            elif now_text(s):
                line += f"; {now_text(s)}"
            print(line, file=self.stream)
            if s.outcome:
                for ln in s.log_tail:
                    print(f"    | {ln}", file=self.stream)
        self.stream.flush()


class JsonLinesRenderer(PlainRenderer):
    """`--json`: the same events as the plain lines, one JSON object each (the report's
    fields for that service, and the stack), for a program that follows a run."""

    def __call__(self, report: WatchReport) -> None:
        import json
        for s in self.due(report):
            print(json.dumps({"event": "watch", "stack": report.stack, **s.to_dict()}),
                  file=self.stream)
        self.stream.flush()


class RichRenderer:
    """A live table (rich), refreshed on every poll: per service a bar of tasks on the new
    spec, the running count apart, the phase, the time and what swarm waits for; final logs
    printed below it."""

    def __init__(self, stream, width: int | None = None):
        self.stream, self.width = stream, width
        self.live = None
        self.report: WatchReport | None = None

    def _updated_cell(self, s: ServiceReport):
        from rich.text import Text
        ascii_only = not (self.console.encoding or "").lower().startswith("utf")
        filled, rest = bar_text(s.updated, s.desired, ascii_only=ascii_only)
        done = s.finished and str(s.outcome) in ("converged", "done")
        noun = " done" if s.mode.endswith("job") else ""
        return Text.assemble((filled, "green" if done else "cyan"), (rest, "grey50"),
                             f" {s.updated}/{s.desired}{noun}")

    def _table(self):
        from rich.table import Table
        from rich.text import Text

        table = Table(box=None, pad_edge=False)
        for col in ("service", "updated", "running", "phase", "time", "now"):
            table.add_column(col, overflow="fold" if col == "now" else "ellipsis",
                             no_wrap=col in ("updated", "time"))
        for s in (self.report.services if self.report else []):
            # names and reasons come from the swarm and from task errors: Text, never markup
            if s.finished:
                phase = Text(str(s.outcome).replace("_", " "),
                             style=_STYLE.get(str(s.outcome), "cyan"))
            else:
                phase = Text(s.phase or "-", style="cyan")
            running = str(s.running) if s.mode.endswith("job") else f"{s.running}/{s.desired}"
            table.add_row(Text(s.name), self._updated_cell(s), running, phase,
                          elapsed(s.seconds), Text(now_text(s)))
        return table

    def __enter__(self):
        from rich.console import Console
        from rich.live import Live

        self.console = Console(file=self.stream, width=self.width)
        self.live = Live(self._table(), console=self.console, refresh_per_second=4,
                         transient=False)
        self.live.__enter__()
        return self

    def __exit__(self, *exc):
        from rich.markup import escape
        if self.live is not None:
            self.live.update(self._table())
            self.live.__exit__(*exc)
            self.live = None
        for s in (self.report.services if self.report else []):
            if s.log_tail:
                self.console.print(f"[bold]{escape(s.name)}[/] last log lines:")
                for ln in s.log_tail:
                    self.console.print(f"    | {ln}", markup=False, highlight=False)
        return None

    def __call__(self, report: WatchReport) -> None:
        self.report = report
        if self.live is not None:
            self.live.update(self._table())


def progress_renderer(stream, *, force_plain: bool = False, as_json: bool = False):
    if as_json:
        return JsonLinesRenderer(stream)
    isatty = getattr(stream, "isatty", lambda: False)()
    return RichRenderer(stream) if isatty and not force_plain else PlainRenderer(stream)
