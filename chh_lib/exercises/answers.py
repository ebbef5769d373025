"""Shared pieces of the exercise checks: the error type and how an answer is read and compared.

See :mod:`chh_lib.exercises` for the contract every check follows.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

#: Relative and absolute tolerance of numbers that the student may compute in float32.
RTOL = 1e-3
ATOL = 1e-6


class ExerciseError(AssertionError):
    """An exercise's answer is wrong; the message says what was expected and gives a hint."""


def is_attempted(answer: Any) -> bool:
    """Whether ``answer`` is no longer the placeholder ``...`` (Ellipsis)."""
    return answer is not Ellipsis


def not_attempted(name: str) -> bool:
    print(f"Exercise {name}: not attempted yet (replace the `...` in the exercise cell with your answer).")
    return False


def correct(name: str, detail: str = "") -> bool:
    print(f"Exercise {name}: correct{': ' + detail if detail else '.'}")
    return True


def fields(answer: Any, keys: Sequence[str], name: str) -> dict[str, Any]:
    """The named entries of a dict answer; an :class:`ExerciseError` naming the missing ones."""
    if not isinstance(answer, Mapping):
        raise ExerciseError(f"Exercise {name}: the answer should be a dict with the keys {list(keys)}, "
                            f"got {type(answer).__name__}.")
    missing = [key for key in keys if key not in answer]
    if missing:
        raise ExerciseError(f"Exercise {name}: the answer lacks the keys {missing} (expected {list(keys)}).")
    return {key: answer[key] for key in keys}


def number(value: Any, what: str, name: str) -> float:
    try:
        return float(np.asarray(value, dtype=np.float64).item())
    except (TypeError, ValueError) as error:
        raise ExerciseError(f"Exercise {name}: {what} should be one number, got {value!r}.") from error


def pair(value: Any, what: str, name: str) -> tuple[float, float]:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ExerciseError(f"Exercise {name}: {what} should be two numbers, got {value!r}.") from error
    if array.shape != (2,):
        raise ExerciseError(f"Exercise {name}: {what} should be two numbers (a tuple), got shape {array.shape}.")
    return float(array[0]), float(array[1])


def flag(value: Any, what: str, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ExerciseError(f"Exercise {name}: {what} should be True or False, got {value!r}.")
    return bool(value)


def choice(value: Any, choices: Mapping[str, str], name: str) -> str:
    """The letter of a predict-then-check answer (case, spaces and brackets ignored), one of ``choices``.

    Raises an :class:`ExerciseError` naming the allowed letters otherwise.
    """
    letter = str(value).strip().strip("()").strip().lower() if isinstance(value, str) else None
    if letter not in choices:
        raise ExerciseError(f"Exercise {name}: verdict should be one of the letters {sorted(choices)}, got {value!r}.")
    return letter


def expect_close(got: float, expected: float, what: str, hint: str, name: str,
                  rtol: float = RTOL, atol: float = ATOL) -> None:
    if math.isnan(expected) and math.isnan(got):
        return
    if not math.isclose(got, expected, rel_tol=rtol, abs_tol=atol):
        raise ExerciseError(f"Exercise {name}: {what} should be {expected:.6g}, got {got:.6g} "
                            f"(tolerance {rtol:g} relative). Hint: {hint}")


