"""Shared test set-up. Tests marked `gpu` run only where TensorRT-RTX has a GPU to use."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    # Asked once per session, and only when GPU tests were collected: NVML answers in ms.
    from matrix.gpu import discover, gpu_skip_reason

    reason = gpu_skip_reason(discover())
    if reason is None:
        return
    skip = pytest.mark.skip(reason=f"needs a GPU that TensorRT-RTX supports: {reason}")
    for item in gpu_items:
        item.add_marker(skip)
