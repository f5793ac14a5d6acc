"""The data-source contract of the training loop: an endless, resumable iterator of batches."""

from __future__ import annotations

from typing import Any, Iterator, Mapping


class DataSource:
    """An endless, resumable iterator of batches.

    ``state_dict()`` must capture enough to continue the exact same sequence
    after ``load_state_dict()`` (the sampler position, not the RNG object).
    """

    def __iter__(self) -> Iterator[Any]:
        raise NotImplementedError  # abstract

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass
