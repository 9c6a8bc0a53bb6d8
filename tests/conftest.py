"""Test setup: offline, quiet libraries, one torch thread for unit tests."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _threads(request: pytest.FixtureRequest) -> None:
    """Unit tests use one thread (tiny models; no oversubscription when run beside other work);
    integration tests use every core, as a user's run does."""
    import torch

    integration = request.node.get_closest_marker("integration") is not None
    torch.set_num_threads((os.cpu_count() or 1) if integration else 1)


def pytest_configure(config: pytest.Config) -> None:
    from bench.run.quiet import quiet_libraries

    quiet_libraries()
