"""The call-worker pool through its own small API: acquire, start, trim, idle."""

from __future__ import annotations

import contextvars
import math

import pytest
import trio
import trio.testing

from trio_micro.rpc._workers import CallWorkers, Job

_var: contextvars.ContextVar[str] = contextvars.ContextVar("test_workers_var", default="unset")


def run(workers: CallWorkers, job: Job, name: str = "job") -> None:
    workers.start(workers.acquire(), job, name)


async def test_a_job_runs_in_a_task_of_the_nursery(nursery: trio.Nursery) -> None:
    workers = CallWorkers(nursery)
    ran: list[str] = []

    async def job() -> None:
        ran.append(trio.lowlevel.current_task().name)

    run(workers, job(), "call:one")
    await trio.testing.wait_all_tasks_blocked()
    assert ran == ["call:one"]


async def test_a_finished_worker_parks_and_runs_the_next_job_in_the_same_task(
    nursery: trio.Nursery,
) -> None:
    workers = CallWorkers(nursery)
    tasks: list[trio.lowlevel.Task] = []

    async def job() -> None:
        tasks.append(trio.lowlevel.current_task())

    run(workers, job(), "first")
    await trio.testing.wait_all_tasks_blocked()
    assert workers.idle == 1
    run(workers, job(), "second")
    await trio.testing.wait_all_tasks_blocked()
    assert tasks[0] is tasks[1]
    assert tasks[1].name == "second"


async def test_concurrent_jobs_get_workers_of_their_own(nursery: trio.Nursery) -> None:
    workers = CallWorkers(nursery)
    release = trio.Event()

    async def job() -> None:
        await release.wait()

    for _ in range(3):
        run(workers, job())
    await trio.testing.wait_all_tasks_blocked()
    assert workers.idle == 0
    release.set()
    await trio.testing.wait_all_tasks_blocked()
    assert workers.idle == 3


async def test_what_a_job_sets_in_the_context_does_not_reach_the_next(
    nursery: trio.Nursery,
) -> None:
    workers = CallWorkers(nursery, context=contextvars.copy_context())
    seen: list[str] = []

    async def job(value: str) -> None:
        seen.append(_var.get())
        _var.set(value)

    run(workers, job("a"))
    await trio.testing.wait_all_tasks_blocked()
    run(workers, job("b"))
    await trio.testing.wait_all_tasks_blocked()
    assert seen == ["unset", "unset"]


async def test_jobs_run_in_a_copy_of_the_given_context(nursery: trio.Nursery) -> None:
    token = _var.set("from the connection")
    try:
        context = contextvars.copy_context()
    finally:
        _var.reset(token)
    workers = CallWorkers(nursery, context=context)
    seen: list[str] = []

    async def job() -> None:
        seen.append(_var.get())

    run(workers, job())
    await trio.testing.wait_all_tasks_blocked()
    assert seen == ["from the connection"]


async def test_a_deadline_set_on_the_scope_ends_with_its_job(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    workers = CallWorkers(nursery)
    deadlines: list[float] = []

    async def job() -> None:
        deadlines.append(trio.current_effective_deadline())

    worker = workers.acquire()
    worker.scope.deadline = trio.current_time() + 5
    workers.start(worker, job(), "first")
    await trio.testing.wait_all_tasks_blocked()
    run(workers, job())  # the same worker, parked
    await trio.testing.wait_all_tasks_blocked()
    assert math.isfinite(deadlines[0])
    assert deadlines[1] == math.inf


async def test_the_deadline_cancels_the_job(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    workers = CallWorkers(nursery)
    outcome: list[str] = []

    async def job() -> None:
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            outcome.append("cancelled")
            raise

    worker = workers.acquire()
    worker.scope.deadline = trio.current_time() + 1
    workers.start(worker, job(), "slow")
    await trio.sleep(2)
    assert outcome == ["cancelled"]


async def test_a_cancelled_scope_is_replaced_before_the_next_job(nursery: trio.Nursery) -> None:
    workers = CallWorkers(nursery)

    async def job() -> None:
        await trio.sleep_forever()

    first = workers.acquire()
    workers.start(first, job(), "first")
    await trio.testing.wait_all_tasks_blocked()
    first.scope.cancel()
    await trio.testing.wait_all_tasks_blocked()
    again = workers.acquire()
    assert again is first
    assert not again.scope.cancel_called


async def test_trim_ends_the_longest_parked_workers_beyond_keep_idle(
    nursery: trio.Nursery,
) -> None:
    workers = CallWorkers(nursery, keep_idle=1)
    release = trio.Event()
    started: list[trio.lowlevel.Task] = []

    async def job() -> None:
        started.append(trio.lowlevel.current_task())
        await release.wait()

    for _ in range(3):
        run(workers, job())
    await trio.testing.wait_all_tasks_blocked()
    release.set()
    await trio.testing.wait_all_tasks_blocked()
    assert workers.idle == 3
    workers.trim()
    await trio.testing.wait_all_tasks_blocked()
    assert workers.idle == 1
    assert len(nursery.child_tasks) == 1


async def test_cancelling_the_nursery_ends_parked_workers() -> None:
    async with trio.open_nursery() as nursery:
        workers = CallWorkers(nursery)

        async def job() -> None:
            await trio.lowlevel.checkpoint()

        run(workers, job())
        await trio.testing.wait_all_tasks_blocked()
        assert workers.idle == 1
        nursery.cancel_scope.cancel()
    assert workers.idle == 0


async def test_an_exception_of_a_job_propagates_out_of_the_nursery() -> None:
    async def job() -> None:
        raise KeyError("boom")

    with pytest.RaisesGroup(KeyError):
        async with trio.open_nursery() as nursery:
            run(CallWorkers(nursery), job())
