"""Builders of tiny data sets on disk, shared by the tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from chh_lib.data.formats import ISBI_FOLDERS, write_descriptor, write_isbi_case


def make_tiny_isbi(
    root: Path,
    images_per_split: int = 2,
    size: tuple[int, int] = (40, 50),
    num_landmarks: int = 19,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Write a small data set in the ISBI layout with random points; returns annotations per image id."""
    rng = np.random.default_rng(seed)
    width, height = size
    annotations = {}
    number = 1
    for folder in ISBI_FOLDERS:
        for _ in range(images_per_split):
            stem = f"{number:03d}"
            image = rng.integers(0, 255, size=(height, width), dtype=np.uint8)
            points = np.stack(
                [rng.uniform(1, width - 2, num_landmarks), rng.uniform(1, height - 2, num_landmarks)], axis=-1
            )
            both = np.stack([points, points + rng.normal(0, 0.5, points.shape)])
            both = np.round(both, 2)
            write_isbi_case(root, folder, stem, image, both, extra_lines=("1", "2"))
            annotations[f"{folder}/{stem}"] = both
            number += 1
    return annotations


def make_tiny_descriptor(root: Path, num_landmarks: int, pixel_size_mm: float = 0.5) -> None:
    """Add a dataset.yaml naming ``num_landmarks`` landmarks L0, L1, ..."""
    write_descriptor(
        root,
        {
            "format": "isbi2015",
            "landmarks": [f"L{k}" for k in range(num_landmarks)],
            "pixel_size_mm": pixel_size_mm,
        },
    )


def write_image(path: Path, array: np.ndarray) -> None:
    """Save an array as an image file (format from the suffix)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def labelme_document(image_name: str, size: tuple[int, int], points: dict[str, tuple[float, float]]) -> dict:
    """A minimal labelme JSON document with one point shape per label."""
    return {
        "version": "5.2.1",
        "shapes": [
            {"label": label, "points": [[x, y]], "shape_type": "point", "group_id": None, "flags": {}}
            for label, (x, y) in points.items()
        ],
        "imagePath": f"../images/{image_name}",
        "imageData": None,
        "imageHeight": size[1],
        "imageWidth": size[0],
    }


def make_tiny_labelme(root: Path, num_images: int = 6, size: tuple[int, int] = (48, 60), seed: int = 0) -> dict:
    """Three landmarks (labels a, b, c), two annotators, 8- and 16-bit and RGB images; returns the points."""
    import json

    rng = np.random.default_rng(seed)
    width, height = size
    truth = {}
    for i in range(num_images):
        name = f"case{i:02d}.png" if i % 3 else f"case{i:02d}.tif"
        if i % 3 == 1:
            image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        elif i % 3 == 2:
            image = rng.integers(0, 65535, (height, width), dtype=np.uint16)
        else:
            image = rng.integers(0, 255, (height, width), dtype=np.uint8)
        write_image(root / "images" / name, image)
        both = np.round(rng.uniform(2, [width - 3, height - 3], size=(2, 3, 2)), 3)
        if i == 2:
            both[1, 2] = np.nan  # the junior annotator skipped landmark c
        for annotator, points in zip(("senior", "junior"), both):
            shapes = {label: tuple(p) for label, p in zip("abc", points) if np.isfinite(p).all()}
            path = root / "labelme" / annotator / f"{Path(name).stem}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(labelme_document(name, size, shapes)))
        truth[name] = both
    write_descriptor(root, {
        "format": "labelme",
        "landmarks": ["alpha point", "beta point", "gamma point"],
        "labels": {"a": "alpha point", "b": "beta point", "c": "gamma point"},
        "pixel_size_mm": {"default": 0.5, "per_image": {"case01.png": [0.4, 0.6]}},
        "images": "images",
        "annotators": {"senior": "labelme/senior", "junior": "labelme/junior"},
        "splits": {"train": [f"case{i:02d}.{'tif' if i % 3 == 0 else 'png'}" for i in range(4)],
                   "test": [f"case{i:02d}.{'tif' if i % 3 == 0 else 'png'}" for i in range(4, num_images)]},
    })
    return truth


def make_tiny_csv(root: Path, num_images: int = 10, size: tuple[int, int] = (48, 60), seed: int = 0) -> dict:
    """Two landmarks, two annotators in one CSV (with an empty cell), split by seeded fractions."""
    rng = np.random.default_rng(seed)
    width, height = size
    lines = ["image,annotator,L1_x,L1_y,L2_x,L2_y"]
    truth = {}
    for i in range(num_images):
        name = f"img{i}.png"
        write_image(root / "pictures" / name, rng.integers(0, 255, (height, width), dtype=np.uint8))
        both = np.round(rng.uniform(2, [width - 3, height - 3], size=(2, 2, 2)), 2)
        if i == 3:
            both[0, 1] = np.nan
        for annotator, points in zip(("senior", "junior"), both):
            cells = ["" if np.isnan(v) else f"{v:.2f}" for v in points.ravel()]
            lines.append(",".join([name, annotator, *cells]))
        truth[name] = both
    (root / "landmarks.csv").write_text("\n".join(lines) + "\n")
    write_descriptor(root, {
        "format": "csv",
        "landmarks": ["first", "second"],
        "abbreviations": ["L1", "L2"],
        "pixel_size_mm": [0.2, 0.25],
        "images": "pictures",
        "annotations": "landmarks.csv",
        "annotators": ["senior", "junior"],
        "splits": {"fractions": {"train": 0.6, "calibration": 0.2, "test": 0.2}, "seed": 4},
    })
    return truth


def make_labelme_export(
    root: Path,
    image_paths: list[str],
    size: tuple[int, int] = (40, 30),
    embed_images: bool = True,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """A labelme export as people publish it: ``cephalograms/NNN.tif`` beside ``cephalograms/NNN.json``.

    One annotator, three landmarks (labels a, b, c), one image per entry of
    ``image_paths``: the ``imagePath`` written into the JSON file, formatted with
    ``n`` (the image number, 1, 2, ...), ``stem`` (``001``, ...) and ``next_stem``
    (the stem of the following image). With ``embed_images`` the image file is
    stored base64-encoded in ``imageData``, as labelme does by default. The
    descriptor leaves ``image_path`` and the splits at their defaults.

    Returns
    -------
    dict
        Image file name -> points, shape (1, 3, 2), in pixels.
    """
    import base64
    import json

    rng = np.random.default_rng(seed)
    width, height = size
    folder = root / "cephalograms"
    truth = {}
    for index, template in enumerate(image_paths):
        n, stem, next_stem = index + 1, f"{index + 1:03d}", f"{index + 2:03d}"
        write_image(folder / f"{stem}.tif", rng.integers(0, 255, (height, width), dtype=np.uint8))
        points = np.round(rng.uniform(2, [width - 3, height - 3], size=(1, 3, 2)), 3)
        document = labelme_document(f"{stem}.tif", size, dict(zip("abc", map(tuple, points[0]))))
        document["imagePath"] = template.format(n=n, stem=stem, next_stem=next_stem)
        if embed_images:
            document["imageData"] = base64.b64encode((folder / f"{stem}.tif").read_bytes()).decode("ascii")
        (folder / f"{stem}.json").write_text(json.dumps(document, indent=2))
        truth[f"{stem}.tif"] = points
    write_descriptor(root, {
        "format": "labelme",
        "landmarks": ["alpha point", "beta point", "gamma point"],
        "labels": {"a": "alpha point", "b": "beta point", "c": "gamma point"},
        "pixel_size_mm": 0.1,
        "images": "cephalograms",
        "annotators": {"senior": "cephalograms"},
    })
    return truth


def train_smoke_run(root: Path) -> tuple[Path, Path]:
    """``chh phantom`` (24 images, 160 x 200, seed 3) then ``chh train --profile smoke`` in ``root``."""
    from chh_lib.cli import main

    data_dir, run_dir = root / "phantom", root / "run"
    assert main(["phantom", str(data_dir), "--num-images", "24", "--image-size", "160", "200", "--seed", "3"]) == 0
    assert main(["train", "--data", str(data_dir), "--run-dir", str(run_dir), "--profile", "smoke",
                 "--device", "cpu", "--no-progress"]) == 0
    return data_dir, run_dir
