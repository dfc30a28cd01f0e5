"""What the payments and refunds aggregates do alike: listeners, result columns, pruning."""

from __future__ import annotations

import enum
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from typing import NoReturn, TypeVar

import structlog

from facepayd.errors import WrongState

__all__ = ["delete_marked", "notify", "refuse_transition", "set_columns"]

log = structlog.get_logger(__name__)

E = TypeVar("E")


def notify(listeners: Iterable[Callable[[E], None]], event: E, **context: str) -> None:
    """Call every listener with a committed event; a listener's failure is logged, not raised."""
    for listener in list(listeners):
        try:
            listener(event)
        except Exception:
            log.exception("journal_listener_failed", **context)


def refuse_transition(
    noun: str, key_name: str, key: str, current: enum.StrEnum, wanted: enum.StrEnum
) -> NoReturn:
    """Log a change the transition table does not allow at error, and refuse it (WrongState)."""
    # A caller that asks for this has a bug: say so loudly, change nothing.
    log.error(
        f"{noun}_transition_refused", **{key_name: key}, current=current.value, wanted=wanted.value
    )
    raise WrongState(f"{noun} {key} cannot go from {current} to {wanted}")


def set_columns(
    row_updates: Mapping[str, str | int], int_columns: frozenset[str]
) -> tuple[str, list[str | int]]:
    """The `, column = ?` fragment for row_updates, whose names are allowlisted, and its values."""
    columns = sorted(row_updates)
    assignments = "".join(f", {column} = ?" for column in columns)
    values: list[str | int] = [
        int(row_updates[c]) if c in int_columns else str(row_updates[c]) for c in columns
    ]
    return assignments, values


def delete_marked(
    db: sqlite3.Connection, table: str, events_table: str, key: str, numbers: list[str]
) -> None:
    """Mark the rows pruning, then delete their events and them (in the caller's transaction)."""
    marks = ", ".join("?" for _ in numbers)
    # Fixed names and placeholders only; the triggers let events go only for rows marked pruning.
    for statement in (
        f"UPDATE {table} SET pruning = 1 WHERE {key} IN ({marks})",  # noqa: S608
        f"DELETE FROM {events_table} WHERE {key} IN ({marks})",  # noqa: S608
        f"DELETE FROM {table} WHERE {key} IN ({marks})",  # noqa: S608
    ):
        db.execute(statement, numbers)
