"""One root exception for the whole tool; every error knows its exit code.

Exit codes are part of the interface (cron and CI act on them) and are
documented in README.md; keep this table and the README in step.
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1          # an operation failed (remote command, API, engine)
EXIT_BAD_INPUT = 2       # bad YAML, cluster file, compose file or flags; nothing changed
EXIT_UNREACHABLE = 3     # SSH connect/auth failed, host key mismatch
EXIT_LOCKED = 4          # another run holds the lock
EXIT_DEGRADED = 5        # status: a node is down, quorum is lost or a service is short of replicas
EXIT_REFUSED = 5         # refused: quorum or the last manager would be lost; nothing changed
EXIT_DEPLOY_FAILED = 10  # a service failed or was paused
EXIT_ROLLED_BACK = 11    # an update was rolled back (unless --allow-rollback)
EXIT_TIMED_OUT = 12      # a watch ran into its deadline


class SwarmsmithError(Exception):
    """Root of every error swarmsmith raises on purpose."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, *, host: str | None = None):
        super().__init__(message)
        self.message = message
        self.host = host

    def __str__(self) -> str:
        return f"{self.host}: {self.message}" if self.host else self.message


class InputError(SwarmsmithError):
    """Bad input. `where` is "file: key.path" so the user can find it."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, *, file: str | None = None, path: str | None = None):
        self.file = file
        self.path = path
        where = ": ".join(p for p in (file, path) if p)
        super().__init__(f"{where}: {message}" if where else message)


class RemoteCommandError(SwarmsmithError):
    """A command on a host exited non-zero; carries the (masked) command and output tail."""

    def __init__(self, message: str, *, host: str | None = None, command: str = "",
                 exit_status: int | None = None, output: str = ""):
        self.command = command
        self.exit_status = exit_status
        self.output = output
        tail = "\n".join(output.strip().splitlines()[-8:])
        detail = f"{message}\n  command: {command}\n  exit status: {exit_status}"
        if tail:
            detail += "\n  output:\n    " + tail.replace("\n", "\n    ")
        super().__init__(detail, host=host)


class UnreachableError(SwarmsmithError):
    exit_code = EXIT_UNREACHABLE


class HostKeyMismatchError(UnreachableError):
    pass


class HostKeyUnknownError(UnreachableError):
    """No pin for a host where one is required (a runner without --accept-new-host-keys)."""


class LockedError(SwarmsmithError):
    exit_code = EXIT_LOCKED


class TimeoutError_(SwarmsmithError):
    exit_code = EXIT_TIMED_OUT


class GroupError(SwarmsmithError):
    """Several hosts failed; names every one of them (fabric's GroupException idea)."""

    def __init__(self, errors: dict[str, BaseException]):
        self.errors = errors
        codes = {getattr(e, "exit_code", EXIT_FAILED) for e in errors.values()}
        self.exit_code = codes.pop() if len(codes) == 1 else EXIT_FAILED
        lines = [f"{len(errors)} host(s) failed:"]
        for name, err in sorted(errors.items()):
            text = str(err)
            if not text.startswith(f"{name}:"):
                text = f"{name}: {text}"
            lines.append("  " + text.replace("\n", "\n  "))
        super().__init__("\n".join(lines))
