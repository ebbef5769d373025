"""pyproject.toml and environment.yml must name the same packages."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# conda package name -> pip distribution name
CONDA_TO_PIP = {"pytorch": "torch", "opencv": "opencv-python"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[;]", requirement.strip(), maxsplit=1)[0].lower()


def test_environment_yml_mirrors_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_names = {_name(r) for r in project["dependencies"]}
    pip_names |= {_name(r) for r in project["optional-dependencies"]["pretrained"]}

    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda_entries = [d for d in environment["dependencies"] if isinstance(d, str)]
    conda_names = {CONDA_TO_PIP.get(_name(d), _name(d)) for d in conda_entries} - {"python", "pip"}
    assert conda_names == pip_names, (
        f"only in environment.yml: {sorted(conda_names - pip_names)}; "
        f"only in pyproject.toml: {sorted(pip_names - conda_names)}"
    )
    pip_section = next(d["pip"] for d in environment["dependencies"] if isinstance(d, dict))
    assert "-e .[dev]" in pip_section
    python = next(d for d in conda_entries if _name(d) == "python")
    assert python == "python=3.11"


def test_numpy_below_2_everywhere():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "numpy<2" in project["dependencies"]
    assert "numpy<2" in yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]


def test_ci_points_pip_at_the_constraints_file():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "PIP_CONSTRAINT" in ci and "constraints.txt" in ci
    pins = (ROOT / "constraints.txt").read_text().split()
    assert any(p.startswith("torch==") for p in pins)
