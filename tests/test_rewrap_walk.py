"""The rewrap walk's retry rule (sevvo/runtime/rewrap.py) on a table held in memory: rows
locked by someone else are looked for again, then reported as left over."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from sevvo.runtime.rewrap import SealedRow, rewrap_tables
from sevvo.runtime.sealing import Keyring, Sealed, seal

OLD = Keyring.generate("k1")
NEW = OLD.with_new_primary("k2")


class LockedRows:
    """A table of sealed rows, some held by another transaction for a number of looks."""

    name = "things"

    def __init__(self, count: int, locked: int, looks_locked: int) -> None:
        self.rows = {i: seal(OLD, b"secret", str(i).encode()) for i in range(count)}
        self.locked = set(range(locked))
        self.looks_locked = looks_locked

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        yield None

    def count_by_kek(self) -> Mapping[str, int]:
        counts: dict[str, int] = {}
        for sealed in self.rows.values():
            counts[sealed.key_id] = counts.get(sealed.key_id, 0) + 1
        return counts

    def lock_not_under(self, conn: Any, kek_id: str, limit: int) -> Sequence[SealedRow]:
        free = [i for i, s in self.rows.items() if s.key_id != kek_id and i not in self.locked]
        return [SealedRow({"id": i}, self.rows[i], str(i).encode()) for i in free[:limit]]

    def replace(self, conn: Any, row: SealedRow, sealed: Sealed) -> bool:
        self.rows[row.ids["id"]] = sealed
        return True

    def pause(self, seconds: float) -> None:
        """The walk's sleep: another look, and the other transaction ends after enough."""
        self.looks_locked -= 1
        if self.looks_locked <= 0:
            self.locked.clear()


def test_rows_locked_for_a_while_are_rewrapped_on_a_later_look() -> None:
    """Two rows locked for two pauses are re-sealed after them; the report says done."""
    table = LockedRows(count=5, locked=2, looks_locked=2)
    report = rewrap_tables([table], NEW, batch_size=2, sleep=table.pause)
    assert report.moved == {"things": 5}
    assert report.done
    assert table.count_by_kek() == {"k2": 5}


def test_rows_locked_throughout_are_reported_left_over() -> None:
    """Rows still locked after every retry are counted under their key, and not done."""
    table = LockedRows(count=3, locked=1, looks_locked=99)
    report = rewrap_tables([table], NEW, retries=2, sleep=table.pause)
    assert report.moved == {"things": 2}
    assert report.remaining == {"things": {"k1": 1}}
    assert not report.done
    assert table.looks_locked == 97
