"""Show a plan as text (what deploy and plan print); JSON is plan.to_dict()."""
from __future__ import annotations

import json

from stacks.plan_apply.plan import CREATE, REMOVE, UNCHANGED, UPDATE, Plan

SYMBOL = {CREATE: "+", UPDATE: "~", UNCHANGED: "=", REMOVE: "-"}
_MAX_VALUE = 120


def _value(v) -> str:
    text = "(unset)" if v is None else json.dumps(v, sort_keys=True, ensure_ascii=False)
    return text if len(text) <= _MAX_VALUE else text[:_MAX_VALUE - 1] + "…"


def plan_lines(plan: Plan, *, show_unchanged: bool = True) -> list[str]:
    c = plan.counts()
    out = [f"stack {plan.stack}: {c[CREATE]} to create, {c[UPDATE]} to update, "
           f"{c[REMOVE]} to remove, {c[UNCHANGED]} unchanged"]
    for a in plan.actions:
        if a.action == UNCHANGED and not show_unchanged:
            continue
        note = f"  ({a.note})" if a.note else ""
        out.append(f"  {SYMBOL[a.action]} {a.kind} {a.name}{note}")
        if a.action == UPDATE:
            for ch in a.changes:
                out.append(f"      {ch.path}: {_value(ch.old)} -> {_value(ch.new)}")
    out += [f"  problem: {p}" for p in plan.problems]
    out += [f"  warning: {w}" for w in plan.warnings]
    return out


def render_text(plan: Plan, *, show_unchanged: bool = True) -> str:
    return "\n".join(plan_lines(plan, show_unchanged=show_unchanged))
