"""Checks for the exercises at the end of the teaching notebooks (one module per notebook).

An exercise in a notebook is three code cells: a placeholder the student
replaces (``answer_04_1 = ...``), a hidden solution that runs only when the
notebook's ``solutions`` parameter is true, and a check cell that calls one of
the functions below::

    from chh_lib import exercises as check

    exercise_results["04_1"] = check.exercise_04_1(answer_04_1, heatmap, pixel_size_mm)

Every check follows the same contract and keeps no state between calls:

- ``...`` (Ellipsis, the placeholder): prints one "not attempted yet" line and
  returns ``False``;
- a right answer: prints one line and returns ``True``;
- a wrong answer: raises :class:`ExerciseError` saying what was expected and
  giving a hint.

A check computes the expected values itself from the inputs passed to it (the
notebook's own data), so nothing depends on the profile or on a trained model's
exact numbers.
"""
from __future__ import annotations

from chh_lib.exercises.answers import ExerciseError, is_attempted
from chh_lib.exercises.notebook_01 import (
    exercise_01_1,
    exercise_01_2,
    exercise_01_3,
    exercise_01_4,
)
from chh_lib.exercises.notebook_02 import (
    exercise_02_1,
    exercise_02_2,
    exercise_02_3,
    exercise_02_4,
)
from chh_lib.exercises.notebook_03 import exercise_03_1, exercise_03_2, exercise_03_3
from chh_lib.exercises.notebook_04 import exercise_04_1, exercise_04_2, exercise_04_3
from chh_lib.exercises.notebook_05 import exercise_05_1, exercise_05_2, exercise_05_3, exercise_05_4
from chh_lib.exercises.notebook_06 import exercise_06_1, exercise_06_2, exercise_06_3

__all__ = ["ExerciseError", "exercise_01_1", "exercise_01_2", "exercise_01_3", "exercise_01_4",
           "exercise_02_1", "exercise_02_2", "exercise_02_3", "exercise_02_4", "exercise_03_1",
           "exercise_03_2", "exercise_03_3", "exercise_04_1",
           "exercise_04_2", "exercise_04_3", "exercise_05_1", "exercise_05_2", "exercise_05_3", "exercise_05_4", "exercise_06_1",
           "exercise_06_2", "exercise_06_3", "is_attempted"]
