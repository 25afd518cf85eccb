"""Run an iterator in a background thread, a few items ahead of its consumer.

The training loop must never wait on the host for its next batch: while the GPU runs step t, a
thread gathers (or receives from DataLoader workers), stacks and page-locks the batches of
steps t+1 and t+2. The heavy parts (index_select, torch.stack, pin_memory, JPEG decoding)
release the GIL, so the thread runs truly alongside the loop that launches GPU work.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import TypeVar

import torch

T = TypeVar("T")

_POLL_S = 0.1  # how often a blocked producer looks whether the consumer has gone


class _Done:
    """End of the source iterator."""


class _Failed:
    """The source iterator raised `error`; the consumer re-raises the same object."""

    def __init__(self, error: BaseException):
        self.error = error


def prefetch(items: Iterator[T], depth: int, device: torch.device | None = None) -> Iterator[T]:
    """Yield the items of `items` in order, produced by a background thread up to `depth`
    ahead. An exception in the thread is re-raised here (the original exception, with its
    traceback); closing this generator stops the thread and closes `items`.

    `device`: the CUDA device the thread's work belongs to. The current CUDA device is per
    thread and starts at GPU 0, so without it every DDP process would also open a context on
    GPU 0 (as DataLoader's pin-memory thread also sets it).
    """
    if depth <= 0:
        yield from items
        return
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            if device is not None and device.type == "cuda" and device.index is not None:
                torch.cuda.set_device(device)
            for item in items:
                if not put(item):
                    return
            put(_Done())
        except BaseException as error:  # handed to the consumer, which re-raises it
            put(_Failed(error))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()  # a generator's cleanup (DataLoader workers) runs in its own thread

    thread = threading.Thread(target=produce, name="selfsup-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if isinstance(item, _Done):
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        stop.set()  # a producer blocked on the full queue sees it within _POLL_S
        thread.join()
