"""Remote commands as data. Secrets inside a command print as *** everywhere but on the wire."""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field


class Secret:
    """A value that must never be printed, logged or stored (join tokens, API tokens)."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return "***"

    __repr__ = __str__


@dataclass(frozen=True)
class Command:
    argv: tuple
    description: str = ""
    stdin: bytes | None = None
    # Treat exit codes listed here as success (e.g. "already there").
    ok_codes: tuple = (0,)
    secrets: tuple = field(default=(), compare=False)

    @classmethod
    def of(cls, *argv, description: str = "", stdin: bytes | None = None, ok_codes=(0,)):
        return cls(tuple(argv), description, stdin, ok_codes,
                   tuple(a for a in argv if isinstance(a, Secret)))

    @classmethod
    def shell(cls, script: str, description: str = "", stdin: bytes | None = None):
        return cls.of("sh", "-c", script, description=description, stdin=stdin)

    def wire(self) -> str:
        """The string sent to the host: secrets revealed. Never log this."""
        return shlex.join(a.reveal() if isinstance(a, Secret) else str(a) for a in self.argv)

    def masked(self) -> str:
        return shlex.join(str(a) for a in self.argv).replace("'***'", "***")

    def scrub(self, text: str) -> str:
        """Remove secret values from output a host sent back (it may echo them)."""
        for s in self.secrets:
            if s.reveal():
                text = text.replace(s.reveal(), "***")
        return text

    def __str__(self) -> str:
        return self.masked()
