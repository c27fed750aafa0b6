"""holocron_scrapy.reactor.get_reactor: the installed reactor itself, and the calls its Protocol types work on it."""

from __future__ import annotations

import threading

import pytest
import pytest_twisted
from twisted.internet import defer

from holocron_scrapy.reactor import get_reactor


def test_get_reactor_is_the_installed_reactor() -> None:
    from twisted.internet import reactor
    from twisted.internet.asyncioreactor import AsyncioSelectorReactor

    assert get_reactor() is reactor
    assert isinstance(get_reactor(), AsyncioSelectorReactor)  # pytest --reactor=asyncio, as Scrapy runs
    assert get_reactor().running


@pytest_twisted.ensureDeferred
async def test_call_later_fires_and_cancel_stops_it() -> None:
    reactor = get_reactor()
    fired: defer.Deferred[str] = defer.Deferred()
    call = reactor.callLater(0.01, fired.callback, "fired")
    assert call.active()
    assert await fired == "fired"
    assert not call.active()

    never: list[int] = []
    later = reactor.callLater(30, never.append, 1)
    later.cancel()
    assert not later.active() and never == []


@pytest_twisted.ensureDeferred
async def test_call_from_thread_runs_on_the_reactor_thread() -> None:
    reactor = get_reactor()
    reactor_thread = threading.current_thread()
    ran_in: defer.Deferred[threading.Thread] = defer.Deferred()
    worker = threading.Thread(
        target=lambda: reactor.callFromThread(lambda: ran_in.callback(threading.current_thread()))
    )
    worker.start()
    assert await ran_in is reactor_thread
    worker.join(5)


@pytest_twisted.ensureDeferred
async def test_system_event_trigger_can_be_removed() -> None:
    reactor = get_reactor()
    trigger = reactor.addSystemEventTrigger("before", "shutdown", lambda: None)
    reactor.removeSystemEventTrigger(trigger)
    with pytest.raises(ValueError):
        reactor.removeSystemEventTrigger(trigger)  # gone: Twisted refuses to remove it twice
