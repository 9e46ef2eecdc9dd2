"""Import every module of the project's packages; list the ones that fail.

Run in an environment with only the base install (``python -m tests.import_all``, as
``.ci/run`` does before installing the test extras), it shows that every import the
base install needs is declared. ``tests/test_base_install.py`` runs it in the test
environment with every distribution outside the base dependencies hidden.
"""

from __future__ import annotations

import importlib
import sys
import traceback
from pathlib import Path

PACKAGES = ("app", "backend", "precompute", "frontend")


def module_names() -> list[str]:
    """Every module of ``PACKAGES``, from the files (folders without ``__init__.py`` are packages too)."""
    names = []
    for package in PACKAGES:
        root = Path(importlib.import_module(package).__file__).parent
        for path in sorted(root.rglob("*.py")):
            parts = path.relative_to(root.parent).with_suffix("").parts
            if "__pycache__" in parts or any(not part.isidentifier() for part in parts):
                continue
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return sorted(set(names))


def import_all() -> dict[str, str]:
    """Import every module; return module name -> the error's last line for those that fail."""
    failures = {}
    for name in module_names():
        try:
            importlib.import_module(name)
        except Exception as exc:  # any failure to import is what this reports
            failures[name] = traceback.format_exception_only(type(exc), exc)[-1].strip()
    return failures


def main() -> None:
    failures = import_all()
    for name, error in failures.items():
        sys.stderr.write(f"{name}: {error}\n")
    count = len(module_names())
    sys.stdout.write(f"imported {count - len(failures)} of {count} modules\n")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
