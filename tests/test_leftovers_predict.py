"""`chh predict` warns, once per image, about an image too small to predict meaningfully."""
from __future__ import annotations

import logging

import numpy as np
import pytest
from helpers import write_image

import chh_lib
from chh_lib.cli import main
from chh_lib.prediction import MAX_ENLARGEMENT
from chh_lib.pretrained import write_pretrained_run

@pytest.fixture(scope="module")
def shipped_run(tmp_path_factory):
    """The shipped model as a run (input 160 x 200 px); images of a few sizes, some too small."""
    root = tmp_path_factory.mktemp("small")
    run = root / "run"
    write_pretrained_run(run)
    rng = np.random.default_rng(0)
    sizes = {"tiny": (5, 6), "half": (80, 100), "narrow": (79, 100), "low": (80, 99), "under_half": (79, 99),
             "large": (320, 400)}
    paths = {}
    for name, (width, height) in sizes.items():
        paths[name] = root / "images" / f"{name}.png"
        write_image(paths[name], rng.integers(0, 255, (height, width), dtype=np.uint8))
    return run, paths


def _small_image_warnings(caplog):
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and "too small to predict meaningfully" in r.getMessage()]


def test_an_image_enlarged_more_than_the_limit_is_named_once_with_its_size(shipped_run, caplog):
    run, paths = shipped_run
    assert MAX_ENLARGEMENT == 2.0
    with caplog.at_level(logging.WARNING, logger="chh_lib.prediction"):
        table = chh_lib.predict(run, list(paths.values()), batch_size=4)
    warnings = _small_image_warnings(caplog)
    assert warnings == [
        f"{paths['tiny']}: 5 x 6 px is too small to predict meaningfully: it is enlarged 32 times to the "
        "network's 160 x 200 input (more than 2 times), so the network sees interpolated pixels",
        f"{paths['under_half']}: 79 x 99 px is too small to predict meaningfully: it is enlarged 2.02 times to "
        "the network's 160 x 200 input (more than 2 times), so the network sees interpolated pixels",
    ]
    assert table["image"].nunique() == 6  # warned, still predicted
    assert np.isfinite(table.loc[table["image"] == str(paths["tiny"]), ["x_px", "y_px"]].to_numpy()).all()


def test_chh_predict_warns_once_per_small_image(shipped_run, tmp_path, caplog):
    run, paths = shipped_run
    out = tmp_path / "p.csv"
    with caplog.at_level(logging.WARNING, logger="chh_lib.prediction"):
        assert main(["predict", "--run-dir", str(run), "--images", str(paths["tiny"]), str(paths["tiny"].parent),
                     "--out", str(out), "--no-progress"]) == 0
    warnings = _small_image_warnings(caplog)
    assert len(warnings) == 2  # tiny (named twice, read once) and under_half
    assert warnings[0].startswith(f"{paths['tiny']}: 5 x 6 px is too small")
    assert warnings[1].startswith(f"{paths['under_half']}: 79 x 99 px is too small")
    assert out.is_file()
