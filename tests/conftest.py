"""Session fixtures. All tests share one content-addressed cache, so the micro world is built once."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """One cache for the whole session: stages built by one test are reused by the others."""
    return tmp_path_factory.mktemp("cache")


