"""Compact pickling for the small records that cross between Bytewax processes."""

from __future__ import annotations

from typing import Any


class FieldTuplePickle:
    """Pickles a ``slots=True`` dataclass as its class and its field values, in field order.

    Python's default for a slots class builds a dictionary of its fields for every object
    and rebuilds the object from it; a batch's counters, updates and models cross between
    processes by the thousand, and this form costs about a fifth as much. Every field must
    be an ``__init__`` argument, in the dataclass's order (the default for dataclasses).
    """

    __slots__ = ()

    def __reduce__(self) -> tuple[type, tuple[Any, ...]]:
        return type(self), tuple([getattr(self, name) for name in self.__slots__])
