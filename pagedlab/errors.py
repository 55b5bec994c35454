"""The errors pagedlab raises. Every one derives from :class:`PagedLabError`.

A call that raises leaves every count, table and cache exactly as it was, so a learner can fix
the input and run the cell again without restarting the kernel.
"""


class PagedLabError(Exception):
    """Base class of every error pagedlab raises on purpose."""


class OutOfBlocks(PagedLabError, MemoryError):
    """The pool has too few free blocks for this request (also a ``MemoryError``)."""


class UnknownSequence(PagedLabError, KeyError):
    """The sequence is not known to this manager: never allocated, or already freed."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


class DoubleFree(PagedLabError):
    """Something was freed twice."""


class InvalidConfig(PagedLabError, ValueError):
    """A size, fraction or option is out of range (also a ``ValueError``)."""


def check_int(name: str, value, minimum: int) -> int:
    """``value`` if it is an int >= ``minimum`` (not a bool), else InvalidConfig naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidConfig(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise InvalidConfig(f"{name} must be >= {minimum}, got {value}")
    return value
