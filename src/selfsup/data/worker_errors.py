"""DataLoader batches whose workers' user errors reach the main process unchanged.

DataLoader re-raises an exception from a worker process as a new one of the same type whose
message is "Caught BadImageError in DataLoader worker process 0. Original Traceback ...":
the CLI, which prints a user error's message as one line, would print the worker's whole
traceback. So here a worker hands a `BadImageError` or `DataFormatError` back as a value in
place of its batch, and the main process raises that same exception (type, message and
attributes survive pickling), with the worker's traceback attached as its cause for debugging.
Other exceptions are bugs, and keep DataLoader's own reporting.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator
from typing import Any

from torch.utils.data import DataLoader, Dataset

from selfsup.data.decode import BadImageError
from selfsup.data.sources import DataFormatError

USER_ERRORS = (BadImageError, DataFormatError)


class WorkerTraceback(Exception):
    """The traceback of an error raised where the data was loaded (shown as its cause)."""


class _Raised:
    """In place of an item or a batch: the user error its loading raised."""

    def __init__(self, error: Exception):
        self.error = error
        self.traceback = "".join(traceback.format_exception(error))


class _ErrorsAsValues(Dataset):
    """`dataset` whose user errors come back as `_Raised` items instead of being raised."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        try:
            return self.dataset[index]
        except USER_ERRORS as error:
            return _Raised(error)


class _CollateUnlessRaised:
    """A batch's first `_Raised` item in place of the batch, else `collate_fn` of its items.
    (A class, not a closure: workers started by spawn or forkserver need to pickle it.)"""

    def __init__(self, collate_fn: Callable[[list], Any]):
        self.collate_fn = collate_fn

    def __call__(self, items: list) -> Any:
        raised = next((item for item in items if isinstance(item, _Raised)), None)
        return raised if raised is not None else self.collate_fn(items)


def load_batches(
    dataset: Dataset, *, collate_fn: Callable[[list], Any], **options: Any
) -> Iterator[Any]:
    """The batches of `DataLoader(dataset, collate_fn=collate_fn, **options)`, in order; a
    `BadImageError` or `DataFormatError` from any worker is raised here as itself."""
    loader = DataLoader(
        _ErrorsAsValues(dataset), collate_fn=_CollateUnlessRaised(collate_fn), **options
    )
    batches = iter(loader)
    try:
        for batch in batches:
            if isinstance(batch, _Raised):
                raise batch.error from WorkerTraceback(batch.traceback)
            yield batch
    finally:
        # Stop the workers now, whatever ended the loop. Left to the garbage collector (an
        # error's traceback holds the iterator), DataLoader's queues are finalised before it
        # shuts the workers down through them, and each worker sits out a 5 s timeout.
        stop_workers = getattr(batches, "_shutdown_workers", None)  # none without workers
        if stop_workers is not None:
            stop_workers()
