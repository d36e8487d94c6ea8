"""Change events without Qt: an emitter per field, so plain objects can announce changes that views follow.

    emitter = EventEmitter("mask")
    emitter.connect(lambda event: print(event.name, event.value))
    emitter.emit(value=mask, old=None)         # every connected callback, in connection order
    with emitter.blocked():
        emitter.emit(value=mask)              # nobody hears this one
    emitter.disconnect(callback)

A callback that raises does not stop the others from hearing the event; the first error is raised after all of
them ran, so a broken view is seen (a test fails) but the other views still follow the state.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator


@dataclass(frozen=True)
class Event:
    """What changed: the field's ``name``, its new ``value`` and its ``old`` one."""

    name: str
    value: Any = None
    old: Any = None


Callback = Callable[[Event], None]


class EventEmitter:
    """Callbacks for one kind of change: connect, disconnect, emit, and block while a batch is being made."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._callbacks: list[Callback] = []
        self._blocked = 0

    def connect(self, callback: Callback) -> Callback:
        """Call ``callback(event)`` on every emit (once, however often it is connected); returns it."""
        if callback not in self._callbacks:
            self._callbacks.append(callback)
        return callback

    def disconnect(self, callback: Callback) -> None:
        """Stop calling ``callback``; one that is not connected is ignored."""
        if callback in self._callbacks:
            self._callbacks.remove(callback)

    def __len__(self) -> int:
        return len(self._callbacks)

    @property
    def is_blocked(self) -> bool:
        return self._blocked > 0

    @contextmanager
    def blocked(self) -> Iterator[None]:
        """Nothing is emitted inside the block (nested blocks count)."""
        self._blocked += 1
        try:
            yield
        finally:
            self._blocked -= 1

    def emit(self, value: Any = None, old: Any = None) -> Event | None:
        """Tell every callback; None when blocked. A callback connected during the emit hears the next one."""
        if self._blocked:
            return None
        event = Event(self.name, value, old)
        first_error: BaseException | None = None
        for callback in list(self._callbacks):
            try:
                callback(event)
            except Exception as error:  # the other views must still follow; the first error is raised below
                first_error = first_error or error
        if first_error is not None:
            raise first_error
        return event
