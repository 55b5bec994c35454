"""The errors pagedlab raises. Every one derives from :class:`PagedLabError`.

A call that raises leaves every count, table and cache exactly as it was, so a learner can fix
the input and run the cell again without restarting the kernel.
"""
import math


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


def check_fraction(name: str, value, *, below_one: bool = False) -> float:
    """``value`` as a float if it is a number in [0, 1] (in [0, 1) with ``below_one``; not a
    bool), else InvalidConfig."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not (0 <= value < 1 if below_one else 0 <= value <= 1):
        raise InvalidConfig(f"{name} must be a fraction in [0, 1{')' if below_one else ']'}, "
                            f"got {value!r}")
    return float(value)


def check_index(name: str, value, size: int) -> int:
    """``value`` if it is an int in [0, size) (not a bool), else InvalidConfig naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < size:
        raise InvalidConfig(f"{name} must be an int in [0, {size}), got {value!r}")
    return value


def check_number(name: str, value, minimum: float = 0.0) -> float:
    """``value`` as a float if it is a finite number >= ``minimum`` (not a bool), else
    InvalidConfig naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value < minimum:
        raise InvalidConfig(f"{name} must be a finite number >= {minimum:g}, got {value!r}")
    return float(value)


def check_positive(name: str, value) -> float:
    """``value`` as a float if it is a finite number > 0 (not a bool), else InvalidConfig."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value <= 0:
        raise InvalidConfig(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_choice(name: str, value, choices: tuple):
    """``value`` if it is one of ``choices``, else InvalidConfig listing them."""
    if value not in choices:
        raise InvalidConfig(f"{name} must be one of {choices}, got {value!r}")
    return value

