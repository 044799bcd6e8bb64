"""Packaging metadata that pip and setuptools read without warnings."""

from pathlib import Path

import tomllib

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_license_is_an_spdx_string():
    # A TOML table (`{ text = "MIT" }`) is deprecated by setuptools >= 77 and warns on every install.
    project = tomllib.loads(PYPROJECT.read_text())
    assert project["project"]["license"] == "MIT"
    assert any(r.startswith("setuptools>=77") for r in project["build-system"]["requires"])


def test_no_docstring_help_or_recipe_cites_a_spec_section():
    # Users have the README and docs/, not the project's internal spec: "spec §1.5" means nothing to them.
    root = PYPROJECT.parent
    files = [*root.glob("mgvideo/**/*.py"), *root.glob("configs/**/*.yaml"), *root.glob("docs/*.md"),
             root / "README.md"]
    cited = [str(f.relative_to(root)) for f in files
             if "spec §" in f.read_text() or "spec section" in f.read_text()]
    assert not cited
