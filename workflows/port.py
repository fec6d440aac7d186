"""The machinery of the core's port (workflows.events names the events): an Event has guards, which run in the
caller's transaction and may veto by raising, and observers, which run after them and never raise; a Scope
wraps something that lasts in the observers' context managers. Dispatch is a loop over a tuple of callables.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from typing import Any

logger = logging.getLogger("workflows.events")


class Event[**P]:
    """One thing that happens in the core, with its guards (may veto) and observers (never raise)."""

    def __init__(self, name: str, *, required: str = "") -> None:
        self.name = name
        self.required = required
        self.guards: tuple[Callable[P, object], ...] = ()
        self.observers: tuple[Callable[P, object], ...] = ()

    def connect(self, guard: Callable[P, object]) -> None:
        """Runs ``guard`` inside the caller's transaction; its exception vetoes what happened."""
        if guard not in self.guards:
            self.guards = (*self.guards, guard)

    def observe(self, observer: Callable[P, object]) -> None:
        """Runs ``observer`` after the guards; its exceptions are logged, never raised."""
        if observer not in self.observers:
            self.observers = (*self.observers, observer)

    def disconnect(self, listener: Callable[P, object]) -> None:
        self.guards = tuple(fn for fn in self.guards if fn != listener)
        self.observers = tuple(fn for fn in self.observers if fn != listener)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> None:
        for guard in self.guards:
            guard(*args, **kwargs)
        for observer in self.observers:
            try:
                observer(*args, **kwargs)
            except Exception:
                logger.exception("listener %s of %s failed", getattr(observer, "__qualname__", observer), self.name)

    def __repr__(self) -> str:
        return f"<Event {self.name}: {len(self.guards)} guards, {len(self.observers)} observers>"


class Scope[**P]:
    """Something that lasts (an attempt running, a worker process): observers wrap it in context managers.

    A listener that fails to make its context manager is logged and left out; the work goes on.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.observers: tuple[Callable[P, AbstractContextManager[Any]], ...] = ()

    def observe(self, observer: Callable[P, AbstractContextManager[Any]]) -> None:
        if observer not in self.observers:
            self.observers = (*self.observers, observer)

    def disconnect(self, observer: Callable[P, AbstractContextManager[Any]]) -> None:
        self.observers = tuple(fn for fn in self.observers if fn != observer)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> AbstractContextManager[Any]:
        if not self.observers:
            return nullcontext()
        if len(self.observers) == 1:
            return self._made(self.observers[0], args, kwargs)
        return self._stacked(args, kwargs)

    def _made(self, observer: Callable[P, AbstractContextManager[Any]], args: Any, kwargs: Any) -> Any:
        try:
            return observer(*args, **kwargs)
        except Exception:
            logger.exception("listener %s of %s failed", getattr(observer, "__qualname__", observer), self.name)
            return nullcontext()

    @contextmanager
    def _stacked(self, args: Any, kwargs: Any) -> Iterator[None]:
        with ExitStack() as stack:
            for observer in self.observers:
                stack.enter_context(self._made(observer, args, kwargs))
            yield


def event[**P](name: str, signature: Callable[P, None], *, required: str = "") -> Event[P]:
    """An Event whose listeners take ``signature``'s arguments (the stub only types them)."""
    return Event[P](name, required=required)


def scope[**P](name: str, signature: Callable[P, None]) -> Scope[P]:
    """A Scope whose listeners take ``signature``'s arguments."""
    return Scope[P](name)
