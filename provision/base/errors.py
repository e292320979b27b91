"""The exceptions and exit codes of swarmsmith, defined in inventory/errors.py (the lowest
layer that raises them) and importable from here, where provision/ and stacks/ take them."""
from inventory.errors import (  # noqa: F401
    EXIT_BAD_INPUT, EXIT_DEGRADED, EXIT_DEPLOY_FAILED, EXIT_FAILED, EXIT_LOCKED, EXIT_OK,
    EXIT_REFUSED, EXIT_ROLLED_BACK, EXIT_TIMED_OUT, EXIT_UNREACHABLE, GroupError, HostKeyMismatchError,
    HostKeyUnknownError, InputError, LockedError, RemoteCommandError, SwarmsmithError, TimeoutError_,
    UnreachableError)


def status_of(exc: BaseException) -> int | None:
    """The HTTP status behind an Engine API error: ours (EngineAPIError.status_code) or the
    docker SDK's (its response)."""
    code = getattr(exc, "status_code", None)
    if code is None:
        code = getattr(getattr(exc, "response", None), "status_code", None)
    return code


def is_conflict(exc: BaseException) -> bool:
    """A create refused because the name is taken (HTTP 409): another writer got there first.
    The text too, for daemons that answer another status with the same words."""
    return status_of(exc) == 409 or "already exists" in str(exc).lower()


def is_not_found(exc: BaseException) -> bool:
    return status_of(exc) == 404 or "not found" in str(exc).lower()


def is_out_of_sequence(exc: BaseException) -> bool:
    """An update sent against an object's version from before its latest change (swarm's
    optimistic locking): read the object again and redo the change."""
    return "out of sequence" in str(exc).lower()
