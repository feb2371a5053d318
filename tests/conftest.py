"""Shared fixtures: small deterministic settings so the suite stays fast on two CPU cores."""

from __future__ import annotations

import pytest
import torch

#: One session-wide Milvus server fixture (``milvus_server_uri``) for the service tests.
pytest_plugins = ["tests.milvus_support"]


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; none present")
    for item in items:
        if item.get_closest_marker("gpu") is not None:  # not keywords: a folder named gpu
            item.add_marker(skip)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory):
    """A small synthetic dataset shared by the training, evaluation and CLI tests."""
    from training.synthetic import make_dataset

    root = tmp_path_factory.mktemp("synthetic")
    make_dataset(root, identities=40, cameras=3, images_per_camera=4, distractors=4, seed=3)
    return root


@pytest.fixture
def small_train_config():
    """The tiny preset (depth 18, 64 x 32) cut to two epochs: seconds on two CPU cores.

    In float32 everywhere (``amp`` off): bf16 rounds differently on every class of CPU and
    GPU, and the tests that hold a run to a quality figure are not about bf16.
    """
    import dataclasses

    from training.config import TRAIN_PRESETS

    return dataclasses.replace(
        TRAIN_PRESETS["tiny"], epochs=2, warmup_epochs=1, milestones=(), eval_every=0, amp=False
    )
