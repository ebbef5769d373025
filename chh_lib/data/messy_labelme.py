"""Write the phantom as a labelme export, optionally with the mess that real exports carry.

A stand-in for a public labelme data set, for trying the readers' policies and the
whole pipeline on files that look as published (``chh phantom DIR --format
labelme --plant-mess``)::

    DIR/dataset.yaml
    DIR/cephalograms/001.png, 001.json, 002.png, 002.json, ...   # images + first annotator
    DIR/junior/001.json, 002.json, ...                           # second annotator (two annotators)

Each JSON file is a labelme 5 document: one ``point`` shape per landmark, labelled
with its ISBI abbreviation (``S``, ``N``, ``Or``, ...), ``imagePath`` as labelme
writes it (``001.png`` beside the image, ``../cephalograms/001.png`` from the
second annotator's folder), ``imageData: null`` (labelme's "save image data" off)
and the image size. The points are the phantom's annotations
(:attr:`chh_lib.data.phantom.PhantomCase.annotations_px`), written exactly.
``dataset.yaml`` names the format, landmarks, pixel size, the default policies
(``on_duplicate_label: error``, ``on_bad_image: error``) and the splits as
fractions (train 0.6, calibration 0.2, test 0.2, seed 0).

The planted mess (:class:`MessCounts`, each kind in its own seeded choice of
images, no image with two kinds), recorded in ``dataset.yaml`` under
``generator.planted``:

* ``duplicate_labels``: a file places one label twice: the annotator's point,
  then (appended last, as labelme appends a new shape) a stray click
  :data:`STRAY_CLICK_MM` away in a random direction. ``on_duplicate_label:
  first`` recovers the point, ``mean`` lands half-way, ``missing`` drops it.
* ``old_names``: ``imagePath`` is the image's name before the files were
  renamed with zero padding (``7.png`` for ``007.png``).
* ``windows_paths``: ``imagePath`` is a Windows path to another name
  (``C:\\Users\\reader\\cephs\\ceph_7.bmp``, the file the export started from).
* ``windows_same_name``: ``imagePath`` is a Windows path whose file name is the
  image's (``D:\\export\\007.png``). Not mess for the reader, which compares
  file names only; planted to show that it is not counted.
* ``corrupt_images``: the PNG file is cut to half its bytes (its header still
  reads; decoding fails).

The same arguments always give byte-identical files. All randomness comes from
``np.random.default_rng((seed, MESS_STREAM))``, apart from the phantom's own.
"""
from __future__ import annotations

import dataclasses
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from chh_lib.config import load_yaml
from chh_lib.data.formats import DESCRIPTOR_NAME, write_descriptor
from chh_lib.data.phantom import PHANTOM_VERSION, generate_phantom, phantom_pixel_size_mm
from chh_lib.errors import ConfigError, DataFormatError
from chh_lib.files import write_bytes_atomic
from chh_lib.landmarks import ISBI_2015

#: Name recorded in ``dataset.yaml`` (``generator.name``).
GENERATOR_NAME = "chh phantom --format labelme"
#: Folder of the images and the first annotator's files.
IMAGE_FOLDER = "cephalograms"
#: Annotator name -> folder, in the order the annotators are written.
ANNOTATOR_FOLDERS = {"senior": IMAGE_FOLDER, "junior": "junior"}
#: The labelme version written in every file.
LABELME_VERSION = "5.4.1"
#: Distance of the stray second click from the annotator's point, in mm.
STRAY_CLICK_MM = 3.0
#: Split fractions written into ``dataset.yaml`` (seed 0).
SPLIT_FRACTIONS = {"train": 0.6, "calibration": 0.2, "test": 0.2}
#: Second seed of the random stream that places the mess (the phantom uses its own).
MESS_STREAM = 4_242


@dataclass(frozen=True)
class MessCounts:
    """How many files carry each kind of planted mess (see the module docstring).

    Attributes
    ----------
    duplicate_labels : int
        JSON files that place one label twice.
    old_names, windows_paths : int
        JSON files whose ``imagePath`` names another file (counted by the reader's warning).
    windows_same_name : int
        JSON files whose ``imagePath`` is a Windows path to the right name (not counted).
    corrupt_images : int
        Images cut to half their bytes.
    """

    duplicate_labels: int = 4
    old_names: int = 5
    windows_paths: int = 3
    windows_same_name: int = 3
    corrupt_images: int = 1

    @property
    def num_images(self) -> int:
        """Images that carry some mess (each carries one kind)."""
        return sum(dataclasses.astuple(self))


@dataclass(frozen=True)
class LabelmeSummary:
    """What :func:`write_labelme_phantom` made.

    Attributes
    ----------
    root : Path
    num_images : int
    annotators : tuple of str
    planted : dict
        ``generator.planted`` of ``dataset.yaml``: kind -> list of entries
        (``{'file': ..., 'label': ...}`` for duplicates, ``{'file': ...,
        'imagePath': ...}`` for image paths, image file names for corrupt images;
        paths relative to ``root``). Empty without mess.
    written : bool
        False when the same export was already there and nothing was written.
    """

    root: Path
    num_images: int
    annotators: tuple[str, ...]
    planted: dict[str, list[Any]]
    written: bool


def labelme_document(points_px: np.ndarray, image_path: str, image_size: tuple[int, int],
                     labels: tuple[str, ...] = ISBI_2015.abbreviations) -> dict[str, Any]:
    """A labelme 5 JSON document with one point shape per landmark.

    Parameters
    ----------
    points_px : ndarray, shape (K, 2)
        (x, y) in pixels of the image; a NaN row is left out (not marked).
    image_path : str
        The ``imagePath`` to write.
    image_size : (int, int)
        (width, height) of the image in pixels.
    labels : tuple of str, length K
        Label of each landmark.

    Returns
    -------
    dict
        Keys in labelme's order; ``imageData`` is None.
    """
    shapes = [
        {"label": label, "points": [[float(x), float(y)]], "group_id": None, "description": "",
         "shape_type": "point", "flags": {}, "mask": None}
        for label, (x, y) in zip(labels, points_px) if np.isfinite(x) and np.isfinite(y)
    ]
    return {"version": LABELME_VERSION, "flags": {}, "shapes": shapes, "imagePath": image_path,
            "imageData": None, "imageHeight": int(image_size[1]), "imageWidth": int(image_size[0])}


def _stray_click(rng: np.random.Generator, point_px: np.ndarray, pixel_size_mm: tuple[float, float],
                 image_size: tuple[int, int]) -> list[float]:
    """A point :data:`STRAY_CLICK_MM` from ``point_px`` in a random direction, kept inside the image."""
    angle = rng.uniform(0.0, 2.0 * np.pi)
    offset_px = STRAY_CLICK_MM * np.array([np.cos(angle), np.sin(angle)]) / np.asarray(pixel_size_mm)
    x, y = np.clip(point_px + offset_px, 0.0, np.asarray(image_size, dtype=float) - 1.0)
    return [float(x), float(y)]


def _plan(rng: np.random.Generator, num_images: int, width: int, counts: MessCounts) -> dict[str, list[int]]:
    """Disjoint seeded choices of image indices for each kind of mess.

    Old names are drawn first, among the images whose unpadded number differs from
    their ``width``-digit name (``7.png`` vs ``007.png``; not ``100.png``).
    """
    if counts.num_images > num_images:
        raise ConfigError(f"the planted mess needs {counts.num_images} images (one kind each), got {num_images}")
    padded = min(num_images, 10 ** (width - 1) - 1)  # images 1 .. 99 for three digits
    if counts.old_names > padded:
        raise ConfigError(f"{counts.old_names} old names need as many images numbered below {padded + 1}")
    old_names = rng.permutation(padded)[: counts.old_names]
    rest = rng.permutation(np.setdiff1d(np.arange(num_images), old_names))
    plan, start = {"old_names": sorted(int(i) for i in old_names)}, 0
    for kind, count in dataclasses.asdict(counts).items():
        if kind != "old_names":
            plan[kind] = sorted(int(i) for i in rest[start:start + count])
            start += count
    return plan


def _descriptor(generator: dict[str, Any], pixel_size_mm: tuple[float, float], annotators: tuple[str, ...]
                ) -> dict[str, Any]:
    spacing = [round(v, 10) for v in pixel_size_mm]
    return {
        "format": "labelme",
        "landmarks": list(ISBI_2015.names),
        "abbreviations": list(ISBI_2015.abbreviations),
        "pixel_size_mm": spacing[0] if spacing[0] == spacing[1] else spacing,
        "images": IMAGE_FOLDER,
        "annotators": {name: ANNOTATOR_FOLDERS[name] for name in annotators},
        "image_path": "by_name",
        "on_duplicate_label": "error",
        "on_bad_image": "error",
        "splits": {"fractions": dict(SPLIT_FRACTIONS), "seed": 0},
        "generator": generator,
    }


def write_labelme_phantom(
    root: Path,
    num_images: int = 200,
    seed: int = 0,
    image_size: tuple[int, int] = (640, 800),
    hard_fraction: float = 0.1,
    num_annotators: int = 2,
    mess: MessCounts | None = None,
    overwrite: bool = False,
) -> LabelmeSummary:
    """Write ``num_images`` phantom cephalograms as a labelme export under ``root``.

    Parameters
    ----------
    root : Path
        Folder to write (created); see the module docstring for the layout.
    num_images, seed, image_size, hard_fraction
        As for :func:`chh_lib.data.phantom.generate_phantom`; ``image_size`` is (width, height) in pixels.
    num_annotators : {1, 2}
        ``senior`` only (its files beside the images), or ``senior`` and ``junior``.
    mess : MessCounts, optional
        The mess to plant; None writes a clean export.
    overwrite : bool
        Write into a folder that holds something else.

    Returns
    -------
    LabelmeSummary

    Raises
    ------
    ConfigError
        Bad arguments (fewer images than the mess needs, ``num_annotators`` not 1 or 2).
    DataFormatError
        ``root`` holds something else and ``overwrite`` is False: nothing there is touched.
    """
    root = Path(root)
    if num_annotators not in (1, 2):
        raise ConfigError(f"num_annotators must be 1 or 2, got {num_annotators}")
    if num_images < 3:
        raise ConfigError(f"num_images must be at least 3 (one per split), got {num_images}")
    if not 0.0 <= hard_fraction <= 1.0:
        raise ConfigError(f"hard_fraction must lie in [0, 1], got {hard_fraction}")
    image_size = (int(image_size[0]), int(image_size[1]))
    annotators = tuple(ANNOTATOR_FOLDERS)[:num_annotators]
    rng = np.random.default_rng((seed, MESS_STREAM))
    width = max(3, len(str(num_images)))
    plan = _plan(rng, num_images, width, mess) if mess is not None else {}
    stems = [f"{index + 1:0{width}d}" for index in range(num_images)]
    planted = _planted_record(rng, plan, stems, annotators)
    generator = {
        "name": GENERATOR_NAME, "phantom_version": str(PHANTOM_VERSION), "seed": int(seed),
        "num_images": int(num_images), "image_size": list(image_size), "hard_fraction": float(hard_fraction),
        "planted": planted,
    }
    descriptor = _descriptor(generator, phantom_pixel_size_mm(image_size), annotators)

    descriptor_path = root / DESCRIPTOR_NAME
    if descriptor_path.is_file() and not overwrite and load_yaml(descriptor_path).get("generator") == generator:
        return LabelmeSummary(root, num_images, annotators, planted, written=False)  # policies edited there are kept
    if root.exists() and any(root.iterdir()) and not overwrite:
        raise DataFormatError(f"{root}: folder is not empty and holds no labelme phantom made with these arguments; "
                              "choose another folder or pass --overwrite")

    other_path = {entry["file"]: entry["imagePath"] for kind in ("old_names", "windows_paths", "windows_same_name")
                  for entry in planted.get(kind, [])}
    duplicated = {entry["file"]: ISBI_2015.abbreviations.index(entry["label"])
                  for entry in planted.get("duplicate_labels", [])}
    corrupt = set(planted.get("corrupt_images", []))
    pixel_size_mm = phantom_pixel_size_mm(image_size)
    for stem, case in zip(stems, generate_phantom(num_images, seed, image_size, hard_fraction)):
        buffer = io.BytesIO()
        Image.fromarray(case.image, mode="L").save(buffer, format="PNG")
        data = buffer.getvalue()
        image_name = f"{IMAGE_FOLDER}/{stem}.png"
        write_bytes_atomic(root / image_name, data[: len(data) // 2] if image_name in corrupt else data, durable=False)
        for number, annotator in enumerate(annotators):
            folder = ANNOTATOR_FOLDERS[annotator]
            name = f"{folder}/{stem}.json"
            image_path = f"{stem}.png" if folder == IMAGE_FOLDER else f"../{IMAGE_FOLDER}/{stem}.png"
            document = labelme_document(case.annotations_px[number], other_path.get(name, image_path), image_size)
            if name in duplicated:
                landmark = duplicated[name]
                original = next(s for s in document["shapes"] if s["label"] == ISBI_2015.abbreviations[landmark])
                stray = _stray_click(rng, case.annotations_px[number, landmark], pixel_size_mm, image_size)
                document["shapes"].append({**original, "points": [stray]})
            write_bytes_atomic(root / name, (json.dumps(document, indent=2) + "\n").encode("utf-8"), durable=False)
    write_descriptor(root, descriptor)
    return LabelmeSummary(root, num_images, annotators, planted, written=True)


def _planted_record(rng: np.random.Generator, plan: dict[str, list[int]], stems: list[str],
                    annotators: tuple[str, ...]) -> dict[str, list[Any]]:
    """The ``generator.planted`` entry of ``dataset.yaml``: what is planted where (paths relative to the root).

    Draws, for each messy file, which annotator's file carries it and (duplicates) which label.
    """
    if not plan:
        return {}

    def json_file(index: int) -> str:
        return f"{ANNOTATOR_FOLDERS[annotators[int(rng.integers(len(annotators)))]]}/{stems[index]}.json"

    planted: dict[str, list[Any]] = {
        "duplicate_labels": [{"file": json_file(i),
                              "label": ISBI_2015.abbreviations[int(rng.integers(ISBI_2015.num_landmarks))]}
                             for i in plan["duplicate_labels"]],
        "old_names": [{"file": json_file(i), "imagePath": f"{i + 1}.png"} for i in plan["old_names"]],
        "windows_paths": [{"file": json_file(i), "imagePath": f"C:\\Users\\reader\\cephs\\ceph_{i + 1}.bmp"}
                          for i in plan["windows_paths"]],
        "windows_same_name": [{"file": json_file(i), "imagePath": f"D:\\export\\{stems[i]}.png"}
                              for i in plan["windows_same_name"]],
        "corrupt_images": [f"{IMAGE_FOLDER}/{stems[i]}.png" for i in plan["corrupt_images"]],
    }
    return planted
