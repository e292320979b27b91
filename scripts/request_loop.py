#!/usr/bin/env python3
"""Send requests to URL while COMMAND runs; count failures and the app versions answered.

    request_loop.py URL [--max-seconds S] [--json] -- COMMAND [ARG...]

One request at a time (2 s timeout each), until COMMAND exits or --max-seconds pass (then
COMMAND is stopped). A request fails when it errors, times out, answers non-200 or with a
body that is not JSON. Prints a summary (or JSON with --json); exit status: COMMAND's, or 1
when any request failed.
"""
from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import threading
import time
import urllib.request


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("url")
    p.add_argument("--max-seconds", type=float, default=300)
    p.add_argument("--json", action="store_true")
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        p.error("a COMMAND is needed after --")
    cut = argv.index("--")
    args, cmd = p.parse_args(argv[:cut]), argv[cut + 1:]
    if not cmd:
        p.error("a COMMAND is needed after --")
    proc = subprocess.Popen(cmd, stdout=sys.stderr if args.json else None)
    counts, versions, errors = collections.Counter(), collections.Counter(), []
    t0 = time.monotonic()
    stop = threading.Event()

    def timer():
        if not stop.wait(args.max_seconds):
            proc.terminate()
    threading.Thread(target=timer, daemon=True).start()
    while proc.poll() is None:
        counts["requests"] += 1
        try:
            with urllib.request.urlopen(args.url, timeout=2) as r:
                body = json.loads(r.read())
            versions[str(body.get("app-version"))] += 1
        except Exception as e:   # every kind of failure counts the same
            counts["failed"] += 1
            if len(errors) < 5:
                errors.append(f"{time.monotonic() - t0:.1f}s: {type(e).__name__}: {e}"[:200])
        time.sleep(0.05)
    stop.set()
    report = {"requests": counts["requests"], "failed": counts["failed"],
              "versions": dict(versions), "seconds": round(time.monotonic() - t0, 1),
              "command_exit": proc.returncode, "first_errors": errors}
    if args.json:
        print(json.dumps(report))
    else:
        seen = ", ".join(f"{v} x{n}" for v, n in sorted(versions.items()))
        print(f"request loop: {report['requests']} requests in {report['seconds']} s, "
              f"{report['failed']} failed; app-version answered: {seen or 'none'}")
        for e in errors:
            print(f"  failed at {e}")
    return proc.returncode or (1 if counts["failed"] else 0)


if __name__ == "__main__":
    sys.exit(main())
