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


def _make_dry_run(*args: str) -> str:
    """What make would run from scratch (-B: every target out of date, -n: print only)."""
    import subprocess

    return subprocess.run(["make", "-n", "-B", *args], cwd=PYPROJECT.parent, capture_output=True, text=True,
                          check=True).stdout


def test_the_demo_installs_no_test_extras_and_the_tests_do():
    demo, test = _make_dry_run("demo"), _make_dry_run("test")
    assert "pip install -e ." in demo and "[dev]" not in demo  # no transformers, lightning, accelerate
    assert "pip install -e '.[dev]'" in test
    assert demo.index("torch==2.13.0") < demo.index("pip install -e .")  # the pinned build first


def test_the_cpu_torch_index_can_be_named():
    assert "--index-url" not in _make_dry_run("setup")
    line = next(x for x in _make_dry_run("setup", "TORCH_INDEX=https://example.invalid/cpu").splitlines()
                if "torch==" in x)
    assert line.endswith("torch==2.13.0 --index-url https://example.invalid/cpu")
