"""The installed Twisted reactor, typed for the calls this project makes on it.

``from twisted.internet import reactor`` is typed by Twisted as a conglomerate of zope interfaces
(``IReactorTime``, ``IReactorCore``, ...). Interface methods are declared without ``self``, so
without the mypy-zope plugin mypy binds the first argument as ``self`` and rejects every
``reactor.callLater(delay, f)`` (and ``IDelayedCall.cancel()``). Rather than one ``type: ignore`` per
call, :func:`get_reactor` hands back the same object seen through the small :class:`Reactor`
Protocol below, which lists only what the project uses, with the signatures Twisted documents.

The import stays inside the function: importing ``twisted.internet.reactor`` installs the default
reactor, and Scrapy must install the configured one (``TWISTED_REACTOR``) first.

No settings read, no stats written; no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, cast


class DelayedCall(Protocol):
    """What ``callLater`` returns (``twisted.internet.interfaces.IDelayedCall``)."""

    def active(self) -> bool: ...

    def cancel(self) -> None: ...


class Reactor(Protocol):
    """The reactor calls this project makes (``IReactorTime``, ``IReactorCore``, ``IReactorThreads``)."""

    @property
    def running(self) -> bool: ...

    def callLater(self, delay: float, callable: Callable[..., Any], /, *args: Any, **kw: Any) -> DelayedCall: ...

    def callFromThread(self, callable: Callable[..., Any], /, *args: Any, **kw: Any) -> None: ...

    def addSystemEventTrigger(
        self, phase: str, eventType: str, callable: Callable[..., Any], /, *args: Any, **kw: Any
    ) -> Any: ...

    def removeSystemEventTrigger(self, triggerID: Any, /) -> None: ...

    def stop(self) -> None: ...


def get_reactor() -> Reactor:
    """The installed reactor (installing Twisted's default one if none is yet, as the import does)."""
    from twisted.internet import reactor

    return cast(Reactor, reactor)


__all__ = ["DelayedCall", "Reactor", "get_reactor"]
