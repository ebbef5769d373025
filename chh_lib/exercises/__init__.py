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
from chh_lib.exercises.notebook_03 import exercise_03_1, exercise_03_2, exercise_03_3
from chh_lib.exercises.notebook_04 import exercise_04_1, exercise_04_2, exercise_04_3

__all__ = ["ExerciseError", "exercise_03_1", "exercise_03_2", "exercise_03_3", "exercise_04_1", "exercise_04_2",
           "exercise_04_3", "is_attempted"]
