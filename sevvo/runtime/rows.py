"""Rows read into dataclasses, taking only the columns a dataclass declares.

Under expand/contract (deploy/k8s/README.md, "Migrations") the next release's migration may
add a column while this release still runs beside it, and ``select *`` or ``returning *``
then return that column too. psycopg's ``class_row`` passes every column to the class, so
one added column would fail every read of the table by the running release mid-rollout; these
take the fields the class declares and leave the rest. A declared field the query does not
return still fails, as it should.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from psycopg.rows import BaseRowFactory, RowMaker, no_result

if TYPE_CHECKING:
    from psycopg._cursor_base import BaseCursor

T = TypeVar("T")


def declared_fields(cls: type[Any]) -> frozenset[str]:
    """The field names of dataclass ``cls``."""
    return frozenset(f.name for f in dataclasses.fields(cls))


def dataclass_row(cls: type[T]) -> BaseRowFactory[T]:
    """A row factory like psycopg's ``class_row`` that ignores columns ``cls`` does not declare."""
    declared = declared_fields(cls)

    def factory(cursor: BaseCursor[Any, Any]) -> RowMaker[T]:
        description = cursor.description
        if description is None:
            return no_result
        picked = [(i, c.name) for i, c in enumerate(description) if c.name in declared]

        def make(values: Sequence[Any]) -> T:
            return cls(**{name: values[i] for i, name in picked})

        return make

    return factory


def known_columns(cls: type[Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of a ``dict_row`` that dataclass ``cls`` declares."""
    declared = declared_fields(cls)
    return {name: value for name, value in values.items() if name in declared}
