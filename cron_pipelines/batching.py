"""Streams in batches, without holding the stream."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import TypeVar

Item = TypeVar("Item")


def chunked(items: Iterable[Item], size: int) -> Iterator[list[Item]]:
    """Consecutive lists of at most `size` items, without materialising the input."""
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk
