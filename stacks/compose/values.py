"""Value formats of compose files: Go durations, memory sizes, CPU counts, and the
shell-word splitting of string commands."""
from __future__ import annotations

import re
from fractions import Fraction

_DUR_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000,
              "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}
_DUR_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(text: str) -> int:
    """Nanoseconds of a Go `time.ParseDuration` string ("1m30s", "500ms", "1.5h",
    "0"); ValueError otherwise (so "10" without a unit is refused, as by the CLI)."""
    if not isinstance(text, str):
        raise ValueError("not a string")
    s = text
    sign = -1 if s.startswith("-") else 1
    s = s.lstrip("+-") if s[:1] in "+-" else s
    if s == "0":
        return 0
    if not s:
        raise ValueError("empty")
    total, pos = Fraction(0), 0
    while pos < len(s):
        m = _DUR_PART.match(s, pos)
        if not m or m.group(1) in ("", "."):
            raise ValueError(f"invalid duration {text!r}")
        total += Fraction(m.group(1)) * _DUR_UNITS[m.group(2)]
        pos = m.end()
    return sign * int(total)  # Go truncates fractions of a nanosecond


def format_duration(ns: int) -> str:
    """Go's Duration.String() ("1m30s", "500ms", "0s")."""
    if ns == 0:
        return "0s"
    sign, ns = ("-" if ns < 0 else ""), abs(ns)
    if ns < 10**9:
        for unit, size in (("ms", 10**6), ("µs", 10**3), ("ns", 1)):
            if ns >= size:
                return sign + _trim(Fraction(ns, size)) + unit
    h, rest = divmod(ns, 3600 * 10**9)
    m, rest = divmod(rest, 60 * 10**9)
    out = (f"{h}h" if h else "") + (f"{m}m" if h or m else "")
    return sign + out + _trim(Fraction(rest, 10**9)) + "s"


def _trim(f: Fraction) -> str:
    text = f"{float(f):.9f}".rstrip("0").rstrip(".")
    return text


_MEM = re.compile(r"^([0-9]+(?:\.[0-9]+)?|\.[0-9]+) ?([kmgtp]?)(b|ib)?$", re.I)


def parse_memory(text: str) -> int:
    """Bytes of a go-units RAMInBytes size ("512m", "1.5G", "100", "2gib"): every
    suffix is 1024-based, fractions of a byte are dropped."""
    m = _MEM.match(text.strip()) if isinstance(text, str) else None
    if not m or (m.group(3) and m.group(3).lower() == "ib" and not m.group(2)):
        raise ValueError(f"invalid size {text!r}")
    power = "kmgtp".find(m.group(2).lower()) + 1 if m.group(2) else 0
    return int(Fraction(m.group(1)) * 1024 ** power)


def parse_cpus(text: str) -> int:
    """NanoCPUs of a cpus string ("0.5" -> 500000000); exact, like the CLI's
    big.Rat parsing: "0.0000000001" is refused as too precise."""
    try:
        value = Fraction(text.strip())
    except (ValueError, ZeroDivisionError, AttributeError):
        raise ValueError(f"invalid CPU count {text!r}") from None
    nano = value * 10**9
    if nano.denominator != 1:
        raise ValueError(f"CPU count {text!r} is too precise (at most 9 decimals)")
    if nano < 0:
        raise ValueError(f"CPU count {text!r} is negative")
    return int(nano)


def split_command(text: str) -> list[str]:
    """Shell words the way google/shlex splits them: POSIX quotes and
    backslashes, `#` starts a comment only at the start of a word, `""` is an
    empty word.  Raises ValueError on an unclosed quote or trailing backslash."""
    words: list[str] = []
    word: list[str] | None = None
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            if word is not None:
                words.append("".join(word))
                word = None
            i += 1
            continue
        if c == "#" and word is None:
            nl = text.find("\n", i)
            i = n if nl < 0 else nl
            continue
        word = [] if word is None else word
        if c == "\\":
            if i + 1 >= n:
                raise ValueError("trailing backslash")
            word.append(text[i + 1])
            i += 2
        elif c == "'":
            end = text.find("'", i + 1)
            if end < 0:
                raise ValueError("unclosed single quote")
            word.append(text[i + 1:end])
            i = end + 1
        elif c == '"':
            i += 1
            while True:
                if i >= n:
                    raise ValueError("unclosed double quote")
                if text[i] == '"':
                    i += 1
                    break
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                word.append(text[i])
                i += 1
        else:
            word.append(c)
            i += 1
    if word is not None:
        words.append("".join(word))
    return words
