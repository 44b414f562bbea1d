"""Fixtures for the compatibility tests (helpers live in ``tests/helpers.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import untrained_model


@pytest.fixture(scope="session")
def untrained_archive_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding ``wts.h5.zip`` of an untrained gridsize-1 model."""
    from ptychopinn.models.persist import save_model

    d = tmp_path_factory.mktemp("untrained")
    save_model(d, untrained_model(), training={"nphotons": 1e6}, metadata={"nphotons": 1e6})
    return d
