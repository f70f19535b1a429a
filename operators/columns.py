"""Columns of one row per item, declared once as a NamedTuple and handed to kernels whole.

A bundle class is a ``NamedTuple`` whose fields default to ``column(...)`` specs: the
field's dtype, the fill of a new row and the name of its row shape. ``rows`` makes a
bundle of arrays from the class, ``grown`` gives it more rows. Kernels take the bundle as one
named argument (``state.T[r]``), so two arrays can never be passed in each other's place,
and what a column is, is said in one place.

Counters that kernels move (how many free slots a pool has left) are one-element
columns that are not per row (``column(np.int64, per_row=False)``), so a kernel updates
them in place instead of returning them.
"""

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, TypeVar

import numpy as np
import numpy.typing as npt

B = TypeVar("B", bound=tuple[Any, ...])

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


class Column(NamedTuple):
    """What a column of a bundle holds: its dtype, the fill of new rows, its row shape."""

    dtype: Any
    fill: object = 0
    tail: tuple[str, ...] = ()  # names of the dimensions after the first (given to ``rows``)
    per_row: bool = True  # False: one element, not grown (a counter kernels move in place)


def column(dtype: Any, fill: object = 0, *tail: str, per_row: bool = True) -> Any:
    """The spec of a bundle field, as its default (typed ``Any`` so it fits the array annotation)."""
    return Column(dtype, fill, tail, per_row)


def specs(kind: type[B]) -> Mapping[str, Column]:
    """Column specs of a bundle class, by field, in field order."""
    defaults: dict[str, Column] = kind._field_defaults  # type: ignore[attr-defined]
    return {name: defaults[name] for name in kind._fields}  # type: ignore[attr-defined]


def rows(kind: type[B], capacity: int, **dims: int) -> B:
    """A bundle of ``capacity`` rows, every row filled; ``dims`` sizes the named dimensions."""
    arrays = []
    for spec in specs(kind).values():
        shape = (capacity, *(dims[d] for d in spec.tail)) if spec.per_row else (1,)
        arrays.append(np.full(shape, spec.fill, dtype=spec.dtype))
    return kind(*arrays)


def room_for(needed: int, have: int, least: int = 16) -> int:
    """Rows to reserve for ``needed`` rows of a per-customer array that holds ``have``.

    An eighth more each time (at least ``least``), not twice as many: with a million
    customers or more, the room held but not used stays under a ninth of the array
    instead of up to half, for about eight copies of a row over its life instead of
    one. A copy of a row costs nanoseconds; memory held for nobody is paid all along.
    """
    return max(needed, have + have // 8, least)


def _doubled(needed: int, have: int) -> int:
    """Slots to reserve for ``needed`` in a pool of ``have``: twice as many (at least 256)."""
    return max(needed, 2 * have, 256)


def grown(bundle: B, capacity: int) -> B:
    """The bundle with ``capacity`` rows: old rows kept, new ones filled (counters as they are)."""
    out = []
    for arr, spec in zip(bundle, specs(type(bundle)).values(), strict=True):
        if spec.per_row:  # each byte written once: the old rows copied, only the new ones filled
            new = np.empty((capacity, *arr.shape[1:]), dtype=arr.dtype)
            new[: arr.shape[0]] = arr
            new[arr.shape[0]:] = spec.fill
            arr = new
        out.append(arr)
    return type(bundle)(*out)


def held(*bundles: tuple[Any, ...]) -> int:
    """Bytes the arrays of ``bundles`` hold, room reserved included."""
    return int(sum(arr.nbytes for bundle in bundles for arr in bundle))


def capacity(bundle: tuple[Any, ...]) -> int:
    """Rows reserved (the first column's length)."""
    return int(bundle[0].shape[0])


def copied(bundle: B, size: int | None = None) -> dict[str, Any]:
    """Plain copies of the columns (the first ``size`` rows), for snapshots that outlive a refactor."""
    kind = type(bundle)
    return {name: (arr[:size] if spec.per_row and size is not None else arr).copy()
            for (name, spec), arr in zip(specs(kind).items(), bundle, strict=True)}


def restored(kind: type[B], snap: Mapping[str, Any]) -> B:
    """A bundle from ``copied`` output."""
    return kind(*(np.array(snap[name]) for name in specs(kind)))


class Pool:
    """Rows of a bundle reused through a stack of free slots: memory follows the most rows in use.

    The bundle class ends with ``free`` (a column: the stack) and ``top`` (a counter: free
    slots are ``free[:top[0]]``); kernels take slots from the top and push freed ones back.
    ``room`` says how many slots to reserve for ``needed`` when ``have`` are: twice as many
    by default, ``room_for`` for a pool whose slots are per customer.
    """

    def __init__(self, kind: type[Any], *, room: Callable[[int, int], int] = _doubled, **dims: int) -> None:
        self.kind = kind
        self.room = room
        self.cols: Any = rows(kind, 0, **dims)

    @property
    def size(self) -> int:
        """Slots reserved, in use or free."""
        return capacity(self.cols)

    @property
    def n_free(self) -> int:
        """Slots free."""
        return int(self.cols.top[0])

    @property
    def in_use(self) -> int:
        """Slots holding an open record."""
        return self.size - self.n_free

    def ensure(self, needed: int) -> None:
        """At least ``needed`` free slots (low slots are taken first)."""
        top = self.n_free
        if top >= needed:
            return
        have = self.size
        cols = grown(self.cols, self.room(have + needed - top, have))
        added = np.arange(capacity(cols) - 1, have - 1, -1, dtype=np.int64)
        cols.free[top: top + added.size] = added
        cols.top[0] = top + added.size
        self.cols = cols

    def snapshot(self) -> dict[str, Any]:
        """Copies of the columns and the free stack."""
        return copied(self.cols)

    def restore(self, snap: dict[str, Any]) -> None:
        """Take over the state of ``snapshot()`` output."""
        self.cols = restored(self.kind, snap)
