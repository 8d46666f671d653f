"""Fixtures of the reliability suite: its scale and one torch thread. The toy model, topics,
readers and processes come from tests/worker/harness.py, shared with the worker tests.

Scenarios that stop Kafka or Redis start a stack of their own (``support.private_stack``)
so the session's servers, which other tests use, are never touched.
"""

from __future__ import annotations

import pytest
import torch

from tests.reliability.support import Scale, current_scale


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    """In-process workers and model wrappers share two cores with everything else."""
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def scale() -> Scale:
    return current_scale()
