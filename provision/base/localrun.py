"""Run commands on this machine (the lab's root namespace). Errors carry command and output."""
from __future__ import annotations

import shlex
import subprocess

from .errors import RemoteCommandError


def run(argv: list[str], *, check: bool = True, input: bytes | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          stdin=None if input is not None else subprocess.DEVNULL, timeout=timeout)
    if check and proc.returncode != 0:
        out = (proc.stdout + proc.stderr).decode(errors="replace")
        raise RemoteCommandError("local command failed", host="localhost",
                                 command=shlex.join(argv), exit_status=proc.returncode, output=out)
    return proc


def ok(argv: list[str]) -> bool:
    """True when the command exits 0; for state checks."""
    return run(argv, check=False).returncode == 0
