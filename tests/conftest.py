"""Shared fixtures: real data from ../shared (skipped with a reason when absent) and from PyPI packages."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HEADSTART_QUIET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HYMENOPTERA = SHARED / "hymenoptera_data"


def needs_shared(path: Path):
    return pytest.mark.skipif(not path.exists(), reason=f"{path} is absent (the ../shared data folder)")


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> Path:
    """One feature cache for the whole session (tests that check caching use their own)."""
    path = Path(os.environ.get("HEADSTART_CACHE") or tmp_path_factory.mktemp("feature-cache"))
    os.environ["HEADSTART_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory) -> Path:
    """scikit-learn's handwritten digits, 20 per class, as PNG class folders (always available)."""
    from headstart.datasets import write_digits

    return write_digits(tmp_path_factory.mktemp("digits"), per_class=20)


@pytest.fixture(scope="session")
def hymenoptera() -> Path:
    if not HYMENOPTERA.exists():
        pytest.skip(f"{HYMENOPTERA} is absent (the ../shared data folder)")
    return HYMENOPTERA
