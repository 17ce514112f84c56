"""Request coalescing: `SingleFlight`, Go's ``singleflight.Group`` for Trio.

Theory of operation
-------------------
A *flight* is one execution of ``fn`` for one key. The first caller for a key becomes
the flight's *leader*: it registers the flight and runs ``fn`` in its own task, under
its own cancel scopes and deadline. Every caller that arrives for the same key while
the flight is registered becomes a *follower*: it parks on the flight's `trio.Event`
and, when the leader finishes, takes the leader's value or re-raises its exception.
There is no hidden task: the work runs in the leader's task, so it is cancelled by the
leader's scopes and its errors surface in the leader's nursery like any other call.

When the leader's ``fn`` ends with something that is not an ``Exception`` (above all
``trio.Cancelled``, because the *leader's* caller gave up), that outcome is private to
the leader: the flight is marked abandoned and its followers wake up and start over;
the first of them to run becomes the new leader and runs ``fn`` again, the others
follow it. Followers therefore never receive someone else's ``Cancelled``, at the price
that ``fn`` can run more than once for what looked like one flight.

A follower that is cancelled just stops waiting; nobody else notices. When a flight
ends, its key is unregistered before anyone is woken, so the next call for the key
runs ``fn`` again: this is coalescing, not caching (put a cache in front of it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from types import TracebackType
from typing import Generic, TypeVar, TypeVarTuple, final

import trio

from .._validate import check_callable

__all__ = ["SingleFlight", "SingleFlightStatistics"]

KeyT = TypeVar("KeyT", bound=Hashable)
ValueT = TypeVar("ValueT")
PosArgsT = TypeVarTuple("PosArgsT")

_PENDING = 0
_VALUE = 1
_ERROR = 2
_ABANDONED = 3


@final
class _Flight(Generic[ValueT]):
    __slots__ = ("done", "error", "state", "traceback", "value")

    value: ValueT
    error: Exception
    traceback: TracebackType | None

    def __init__(self) -> None:
        self.done = trio.Event()
        self.state = _PENDING


@final
@dataclass(frozen=True, slots=True)
class SingleFlightStatistics:
    """A snapshot of a `SingleFlight`.

    Attributes:
        calls: Calls to `SingleFlight.call` so far.
        executions: Times ``fn`` was started (leaders, including take-overs).
        shared: Calls that returned (or raised) another call's outcome.
        in_flight: Keys with a registered flight now.
        tasks_waiting: Followers waiting for a flight now.
    """

    calls: int
    executions: int
    shared: int
    in_flight: int
    tasks_waiting: int


@final
class SingleFlight(Generic[KeyT, ValueT]):
    """Coalesce concurrent calls with the same key into one execution of ``fn``.

    ::

        users: SingleFlight[int, User] = SingleFlight()
        user = await users.call(user_id, db.load_user, user_id)

    Concurrent calls with the same key run ``fn`` once and all receive its return
    value, or all raise its exception (the *same* exception object, as with asyncio
    futures). See the module docstring for the leader/follower protocol.
    """

    __slots__ = ("_calls", "_executions", "_flights", "_shared", "_waiting")

    def __init__(self) -> None:
        self._flights: dict[KeyT, _Flight[ValueT]] = {}
        self._calls = 0
        self._executions = 0
        self._shared = 0
        self._waiting = 0

    def __repr__(self) -> str:
        return f"<SingleFlight in_flight={len(self._flights)}>"

    async def call(
        self,
        key: KeyT,
        fn: Callable[[*PosArgsT], Awaitable[ValueT]],
        *args: *PosArgsT,
    ) -> ValueT:
        """Return ``await fn(*args)``, sharing one execution among concurrent callers.

        If no flight for ``key`` is registered, this call leads one: it runs
        ``fn(*args)`` in the calling task. Otherwise it waits for the registered
        flight and returns its value or raises its exception; ``fn`` and ``args`` of
        a follower are only used if it has to take over (see below).

        Always a checkpoint (one at entry, before the key is looked up).

        Cancellation: a cancelled follower raises ``trio.Cancelled`` and nobody else is
        affected. A cancelled leader raises ``trio.Cancelled`` too (its ``fn`` is
        cancelled with it), but its followers do not see that: one of them takes over
        and runs its own ``fn(*args)``, so ``fn`` may run again. The same holds for any
        other ``BaseException`` that is not an ``Exception`` (e.g. ``KeyboardInterrupt``).

        Args:
            key: Identifies the work; calls with equal keys are coalesced.
            fn: An async function; the leader awaits ``fn(*args)``.
            *args: Positional arguments for ``fn``.

        Returns:
            The value ``fn`` returned for this flight.

        Raises:
            TypeError: If ``fn`` is not callable (before any checkpoint) or ``key`` is
                unhashable.
            Exception: Whatever ``fn`` raised, in the leader and in every follower.
        """
        check_callable("fn", fn, expected="an async function")
        await trio.lowlevel.checkpoint()
        self._calls += 1
        while True:
            flight = self._flights.get(key)
            if flight is None:
                return await self._lead(key, fn, args)
            self._waiting += 1
            try:
                await flight.done.wait()
            finally:
                self._waiting -= 1
            if flight.state == _ABANDONED:
                continue  # the leader left without an outcome: start over
            self._shared += 1
            if flight.state == _ERROR:
                raise flight.error.with_traceback(flight.traceback)
            return flight.value

    async def _lead(
        self,
        key: KeyT,
        fn: Callable[[*PosArgsT], Awaitable[ValueT]],
        args: tuple[*PosArgsT],
    ) -> ValueT:
        flight: _Flight[ValueT] = _Flight()
        self._flights[key] = flight
        self._executions += 1
        try:
            value = await fn(*args)
        except Exception as exc:
            flight.error = exc
            # Followers re-raise with this traceback (where fn failed), as asyncio does.
            flight.traceback = exc.__traceback__
            flight.state = _ERROR
            raise
        except BaseException:
            flight.state = _ABANDONED
            raise
        else:
            flight.value = value
            flight.state = _VALUE
            return value
        finally:
            # forget() may have replaced our registration with a newer flight.
            if self._flights.get(key) is flight:
                del self._flights[key]
            flight.done.set()

    def forget(self, key: KeyT) -> None:
        """Unregister the flight for ``key``, if any (Go's ``Group.Forget``).

        Callers already following that flight still get its outcome; the next call
        for ``key`` starts a new flight instead of joining it. Not a checkpoint.

        Args:
            key: The key to forget; unknown keys are ignored.
        """
        self._flights.pop(key, None)

    def statistics(self) -> SingleFlightStatistics:
        """Return a snapshot; see `SingleFlightStatistics`. Not a checkpoint."""
        return SingleFlightStatistics(
            calls=self._calls,
            executions=self._executions,
            shared=self._shared,
            in_flight=len(self._flights),
            tasks_waiting=self._waiting,
        )
