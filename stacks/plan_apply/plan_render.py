"""Show a plan: plain text (logs, CI), rich (a terminal), or JSON (plan.to_dict())."""
from __future__ import annotations

import json

from stacks.plan_apply.plan import CREATE, REMOVE, UNCHANGED, UPDATE, Plan

SYMBOL = {CREATE: "+", UPDATE: "~", UNCHANGED: "=", REMOVE: "-"}
STYLE = {CREATE: "green", UPDATE: "yellow", UNCHANGED: "dim", REMOVE: "red"}
_MAX_VALUE = 120


def _value(v) -> str:
    text = "(unset)" if v is None else json.dumps(v, sort_keys=True, ensure_ascii=False)
    return text if len(text) <= _MAX_VALUE else text[:_MAX_VALUE - 1] + "…"


def plan_lines(plan: Plan, *, show_unchanged: bool = True) -> list[tuple[str, str]]:
    """(style, line) pairs; the text and rich renderers share them."""
    c = plan.counts()
    out = [("bold", f"stack {plan.stack}: {c[CREATE]} to create, {c[UPDATE]} to update, "
                    f"{c[REMOVE]} to remove, {c[UNCHANGED]} unchanged")]
    for a in plan.actions:
        if a.action == UNCHANGED and not show_unchanged:
            continue
        note = f"  ({a.note})" if a.note else ""
        out.append((STYLE[a.action], f"  {SYMBOL[a.action]} {a.kind} {a.name}{note}"))
        if a.action == UPDATE:
            for ch in a.changes:
                out.append(("", f"      {ch.path}: {_value(ch.old)} -> {_value(ch.new)}"))
    for p in plan.problems:
        out.append(("bold red", f"  problem: {p}"))
    for w in plan.warnings:
        out.append(("yellow", f"  warning: {w}"))
    return out


def render_text(plan: Plan, *, show_unchanged: bool = True) -> str:
    return "\n".join(line for _, line in plan_lines(plan, show_unchanged=show_unchanged))


def render_rich(plan: Plan, console=None, *, show_unchanged: bool = True) -> None:
    from rich.console import Console
    from rich.text import Text
    console = console or Console()
    for style, line in plan_lines(plan, show_unchanged=show_unchanged):
        console.print(Text(line, style=style or None))
