"""Packaging metadata that pip and setuptools read without warnings."""

from pathlib import Path

import tomllib

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_license_is_an_spdx_string():
    # A TOML table (`{ text = "MIT" }`) is deprecated by setuptools >= 77 and warns on every install.
    project = tomllib.loads(PYPROJECT.read_text())
    assert project["project"]["license"] == "MIT"
    assert any(r.startswith("setuptools>=77") for r in project["build-system"]["requires"])
