from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def reference_vectors() -> dict[str, np.ndarray]:
    """The independent CHH reference vectors (see tests/data/README.md)."""
    with np.load(DATA / "chh_reference_vectors.npz") as arrays:
        return {name: arrays[name] for name in arrays.files}
