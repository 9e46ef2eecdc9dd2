"""Every module imports with only the base install's dependencies (no test extras, no optional extras).

The test environment has more packages than a user's base install (the test extras bring pandas, for
one). So the check runs in a fresh interpreter without site-packages (``python -S``) whose path holds
only the distributions of the base requirements' closure, linked from this environment: an import of
anything else fails there as it would on a fresh machine, and so does a library's probe for it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

PROJECT = "blindspot-atlas"
ROOT = Path(__file__).resolve().parents[1]


def _name(distribution: str) -> str:
    return distribution.lower().replace("_", "-").replace(".", "-")


def base_closure() -> set[str]:
    """The project's base requirements and everything they require, as installed here (extras excluded)."""
    seen, todo = set(), [PROJECT]
    while todo:
        name = todo.pop()
        if _name(name) in seen:
            continue
        seen.add(_name(name))
        try:
            requirements = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for line in requirements:
            requirement = Requirement(line)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue  # an optional extra, or another platform's
            todo.append(requirement.name)
    return seen


def base_site(folder: Path, allowed: set[str]) -> Path:
    """A site-packages folder holding links to the installed files of the ``allowed`` distributions only."""
    folder.mkdir(parents=True, exist_ok=True)
    for dist in metadata.distributions():
        if _name(dist.metadata["Name"]) not in allowed or _name(dist.metadata["Name"]) == PROJECT:
            continue
        for top in {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}:
            source = Path(dist.locate_file(top))
            link = folder / top
            if source.exists() and not link.exists():
                link.symlink_to(source)
    return folder


def run_without_site(site: Path, code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{ROOT}", "PYTHONNOUSERSITE": "1"}
    return subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=600,
                          cwd=ROOT, env=env)


def test_every_module_imports_with_the_base_dependencies_only(tmp_path):
    allowed = base_closure()
    assert {"torch", "duckdb", "fastapi"} <= allowed
    site = base_site(tmp_path / "site", allowed)
    run = run_without_site(site, "import json; from tests.import_all import import_all; print(json.dumps(import_all()))")
    assert run.returncode == 0, run.stderr
    failures = json.loads(run.stdout.strip().splitlines()[-1])
    assert failures == {}, failures


def test_the_check_catches_an_undeclared_import(tmp_path):
    """The control: in the same environment a package of the test extras is missing."""
    allowed = base_closure()
    if "pytest" in allowed:
        pytest.skip("pytest is a base dependency here")
    run = run_without_site(base_site(tmp_path / "site", allowed), "import pytest")
    assert run.returncode != 0 and "No module named 'pytest'" in run.stderr
