"""`swarmsmith config -c FILE…`: the merged, interpolated stack as YAML, like
`docker stack config`, printed only after it validated (warnings to stderr).

Shape as the CLI prints it: short syntaxes expanded (ports, volumes,
secrets), environment as a mapping with env_file entries read in, paths
absolute.  Values are kept as written otherwise (durations and sizes are not
reformatted as the CLI's Go types would).
"""
from __future__ import annotations

from stacks.loader import Compose
from stacks.yaml_source import dump

_ORDER = ("version", "services", "networks", "volumes", "secrets", "configs")


def config_document(compose: Compose) -> dict:
    m = compose.model
    out = {k: m[k] for k in _ORDER if k in m}
    out["services"] = dict(sorted((m.get("services") or {}).items()))
    out.update({k: v for k, v in m.items() if k not in out})
    return out


def render_config(compose: Compose) -> str:
    return dump(config_document(compose))


def run_config(args, out=None, err=None) -> int:
    import sys
    from stacks.loader import load
    from stacks.validate import validate
    out, err = out or sys.stdout, err or sys.stderr
    compose = load(args.compose_files, env_file=args.env_file)
    for w in validate(compose, strict=args.strict):
        print(f"warning: {w}", file=err)
    out.write(render_config(compose))
    return 0
