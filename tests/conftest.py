"""Shared fixtures."""

import pytest

from batches import Batch, make_batch


@pytest.fixture
def batch() -> Batch:
    return make_batch()
