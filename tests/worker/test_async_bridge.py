"""worker/async_bridge.py: one job's blocking generator driven from the event loop on one thread of its own."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncGenerator

import pytest

from worker.async_bridge import iterate_in_thread

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_items_arrive_in_order_all_made_on_one_thread_that_is_not_the_loops():
    threads = []

    def job():
        for i in range(20):
            threads.append(threading.get_ident())
            yield i

    assert [item async for item in iterate_in_thread(job())] == list(range(20))
    assert len(set(threads)) == 1 and threads[0] != threading.get_ident()


async def test_the_loop_stays_free_while_the_job_blocks():
    def job():
        time.sleep(0.5)
        yield "done"

    ticks = 0

    async def tick():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    assert [item async for item in iterate_in_thread(job())] == ["done"]
    ticker.cancel()
    assert ticks > 20


async def test_the_jobs_exception_is_raised_to_the_consumer_after_its_items():
    def job():
        yield 1
        raise ValueError("broken chunk")

    got = []
    with pytest.raises(ValueError, match="broken chunk"):
        async for item in iterate_in_thread(job()):
            got.append(item)
    assert got == [1]


async def test_a_consumer_that_stops_early_stops_the_job_and_its_finally_runs_on_its_thread():
    produced, closed_on = [], []
    release = threading.Event()

    def job():
        try:
            for i in range(1000):
                produced.append(i)
                yield i
                release.wait(5)  # the job is slow: the consumer leaves while it works
        finally:
            closed_on.append(threading.get_ident())

    items = iterate_in_thread(job())
    assert isinstance(items, AsyncGenerator)  # what a consumer leaving early closes
    assert await anext(items) == 0
    await items.aclose()
    release.set()
    for _ in range(200):
        if closed_on:
            break
        await asyncio.sleep(0.01)
    assert closed_on and closed_on[0] != threading.get_ident()
    assert len(produced) <= 2  # it stopped after the item it was computing
