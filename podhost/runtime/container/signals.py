"""Stop signals: how a container is asked to stop (the image's StopSignal, or CRI ContainerConfig's
stop_signal since KEP-4960), by name or number, and CRI's `Signal` enum names for them.

The realtime signals have no fixed numbers: "SIGRTMIN+3" and "SIGRTMAX-2" are resolved on this host, as
the kernel and the OCI runtimes do. Nothing here runs or sends anything.
"""

from __future__ import annotations

import signal

from podhost.errors import InvalidArgument

#: CRI's enum spells "+" and "-" of the realtime signals out.
_CRI_SPELLING = (("+", "PLUS"), ("-", "MINUS"))


def parse_signal(name: str) -> int:
    """A stop signal ("SIGQUIT", "QUIT", "3", "SIGRTMIN+1") as a number; SIGTERM when empty."""
    if not name:
        return int(signal.SIGTERM)
    if name.isdigit():
        return int(name)
    upper = name.upper()
    upper = upper if upper.startswith("SIG") else "SIG" + upper
    for base, sign in (("SIGRTMIN", "+"), ("SIGRTMAX", "-")):
        offset = upper.removeprefix(base)
        if upper.startswith(base) and offset.startswith(sign) and offset[1:].isdigit():
            number = (
                int(getattr(signal, base)) + int(offset)
                if sign == "+"
                else int(getattr(signal, base)) - int(offset[1:])
            )
            if signal.SIGRTMIN <= number <= signal.SIGRTMAX:
                return number
    try:
        return int(signal.Signals[upper])
    except KeyError as e:
        raise InvalidArgument(f"unknown stop signal {name!r}") from e


def signal_name(number: int) -> str:
    """The canonical name of a signal number ("SIGQUIT", "SIGRTMIN+1")."""
    if signal.SIGRTMIN < number < signal.SIGRTMAX:
        low, high = number - signal.SIGRTMIN, signal.SIGRTMAX - number
        return f"SIGRTMIN+{low}" if low <= high else f"SIGRTMAX-{high}"
    return signal.Signals(number).name


def from_cri(enum_name: str) -> str:
    """CRI `Signal` enum name ("SIGNAL_SIGRTMINPLUS1") → signal name ("SIGRTMIN+1"); "" for the default."""
    name = enum_name.removeprefix("SIGNAL_")
    if name == "RUNTIME_DEFAULT":
        return ""
    for sign, word in _CRI_SPELLING:
        name = name.replace(word, sign)
    return name


def to_cri(name: str) -> str:
    """A stop signal as CRI's `Signal` enum name (normalised first: "QUIT" and "3" are SIGNAL_SIGQUIT)."""
    canonical = signal_name(parse_signal(name))
    for sign, word in _CRI_SPELLING:
        canonical = canonical.replace(sign, word)
    return "SIGNAL_" + canonical
