"""How a runtime's methods run: coroutines on the loop, plain functions in a bounded pool.

The choice is made once per callable when a model is loaded, never per request.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

AsyncCallable = Callable[..., Awaitable[Any]]


INLINE_BUDGET_SECONDS = 0.002
"""Synchronous calls faster than this run on the event loop: a thread hand-off would cost more
than it saves, and the loop is held no longer than parsing one large request takes."""


class Executor:
    def __init__(self, max_threads: int) -> None:
        self._pool = ThreadPoolExecutor(
            max_workers=max_threads, thread_name_prefix="servekit-model"
        )

    @staticmethod
    def inline(fn: Callable[..., Any]) -> AsyncCallable:
        """Run a short synchronous call directly on the event loop."""
        if inspect.iscoroutinefunction(fn):
            return fn

        async def run_inline(*args: Any, **kwargs: Any) -> Any:
            result = fn(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
            return result

        return run_inline

    def bind(self, fn: Callable[..., Any]) -> AsyncCallable:
        """An async callable that runs ``fn`` without blocking the event loop."""
        if inspect.iscoroutinefunction(fn):
            return fn

        pool = self._pool

        async def run_in_pool(*args: Any, **kwargs: Any) -> Any:
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(pool, functools.partial(fn, *args, **kwargs))
            if inspect.isawaitable(result):  # a plain function that returned a coroutine
                result = await result
            return result

        return run_in_pool

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self.bind(fn)(*args)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
