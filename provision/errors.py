"""The exceptions and exit codes of swarmsmith, defined in inventory/errors.py (the lowest
layer that raises them) and importable from here, where provision/ and stacks/ take them."""
from inventory.errors import (  # noqa: F401
    EXIT_BAD_INPUT, EXIT_DEGRADED, EXIT_DEPLOY_FAILED, EXIT_FAILED, EXIT_LOCKED, EXIT_OK,
    EXIT_REFUSED, EXIT_ROLLED_BACK, EXIT_TIMED_OUT, EXIT_UNREACHABLE, GroupError, HostKeyMismatchError,
    HostKeyUnknownError, InputError, LockedError, RemoteCommandError, SwarmsmithError, TimeoutError_,
    UnreachableError)
