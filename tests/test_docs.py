"""The documentation: the site builds strictly, and nothing in it drifts from its source.

* ``docs/configuration-reference.md`` equals what ``docs/gen_config_reference.py``
  writes from the typed settings and ``pyproject.toml``;
* ``mkdocs build --strict`` passes (a broken link, a missing anchor or a page left out
  of the nav fails it);
* the README stays a front door: short, its links resolve, and its test command is the
  one ``.ci/run`` runs.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
README_MAX_LINES = 250


def load_generator():
    spec = importlib.util.spec_from_file_location(
        "gen_config_reference", ROOT / "docs" / "gen_config_reference.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configuration_reference_is_generated_from_the_settings():
    # Prepare
    gen = load_generator()
    committed = (ROOT / "docs" / "configuration-reference.md").read_text()
    # Execute
    fresh = gen.render()
    # Assert
    assert fresh == committed, (
        "docs/configuration-reference.md is out of date: "
        "run .venv/bin/python docs/gen_config_reference.py"
    )


def test_the_generator_runs_as_a_script(tmp_path: Path):
    # Prepare: the script must import this checkout's settings, whatever else is installed
    out = tmp_path / "reference.md"
    # Execute
    proc = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "gen_config_reference.py"), str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    # Assert
    assert proc.returncode == 0, proc.stderr
    assert out.read_text() == (ROOT / "docs" / "configuration-reference.md").read_text()


def test_configuration_reference_lists_every_key_of_pyproject():
    # Prepare
    gen = load_generator()
    keys = gen.pyproject_comments((ROOT / "pyproject.toml").read_text())
    # Execute
    page = gen.render()
    # Assert
    assert len(keys) > 50
    missing = [k for k in keys if f"| `{k}` |" not in page]
    assert missing == []


def test_comments_are_read_outside_quotes():
    gen = load_generator()
    assert gen._comment('a = "x # y"   # the comment') == "the comment"
    assert gen._comment('a = "x # y"') == ""
    assert gen._comment("    method: Literal[M] = 'm'  # type: ignore[valid-type]") == ""


def test_site_builds_in_strict_mode(tmp_path: Path):
    # Prepare
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    # Execute
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    # Assert
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (site / "index.html").is_file()
    assert (site / "configuration-reference" / "index.html").is_file()
    # the pages that include files kept elsewhere got their content
    assert "Declared regimes" in (site / "regimes" / "index.html").read_text()
    assert "SuperNode" in (site / "deploy-guide" / "index.html").read_text()


def test_readme_is_a_short_front_door():
    text = README.read_text()
    assert len(text.splitlines()) <= README_MAX_LINES
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [t for t in targets if "://" not in t and not t.startswith("mailto:")]
    assert local, "the README links to the docs"
    assert [t for t in local if not (ROOT / t).exists()] == []


def test_readme_test_command_is_the_one_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text()
    command = next(line for line in ci.splitlines() if "pytest" in line).strip()
    assert command in README.read_text()
