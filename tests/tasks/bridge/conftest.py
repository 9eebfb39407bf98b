"""Diffusion tests run tiny UNets: one intra-op thread is faster for them (and far faster when the
machine is shared), so every test of this folder runs single-threaded and restores the setting."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
