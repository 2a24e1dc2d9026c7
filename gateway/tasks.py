"""Background tasks: stopping them, and cancellations that libraries lose.

On Python 3.11, ``asyncio.wait_for`` returns the result instead of raising
when its task is cancelled just as the awaited operation completes, and
redis-py sends every command through it. A loop that keeps running after such
a lost cancellation would never stop, so the gateway's loops call
``raise_if_cancelled`` after each round.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from gateway.logs import describe_error


def raise_if_cancelled() -> None:
    """Raise CancelledError if this task was cancelled and the error was lost.

    An ``asyncio.timeout`` that has expired counts as a pending cancellation
    too, and raising is then what it expects: it turns the error into its
    TimeoutError.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


#: Seconds between two cancellations of a task that does not stop.
CANCEL_AGAIN_AFTER = 1.0


async def finish(task: asyncio.Task[Any], logger: logging.Logger) -> None:
    """Cancel a background task and wait until it has ended.

    Unlike awaiting the task, waiting on it does not raise the task's own
    CancelledError, so a cancellation of the caller is never mistaken for it
    and swallowed. A task that lost the cancellation is cancelled again.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=CANCEL_AGAIN_AFTER)
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        logger.error(
            "a background task ended with an error",
            extra={
                "event": "task_failed",
                "task": task.get_name(),
                "error": describe_error(error),
            },
        )
