"""The dependency rule of the README's architecture section."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "lake": {"api", "sdk", "fastapi", "starlette", "uvicorn", "httpx", "httpx2", "requests"},
    "sdk": {"lake", "api"},
}


def imported_packages(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_dependency_rule(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"package {package} has no modules"
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) & FORBIDDEN[package])
        for path in files
        if imported_packages(path) & FORBIDDEN[package]
    }
    assert offenders == {}


def test_only_the_delta_module_opens_delta_tables() -> None:
    users = sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / "lake").rglob("*.py")
        if "deltalake" in imported_packages(path)
    )
    assert users == ["lake/delta.py"]


def test_parsing_a_batch_needs_nothing_of_the_storage_layer() -> None:
    """A parse helper (lake.parsepool) imports what parsing needs: not Delta, not the lake."""
    import subprocess
    import sys

    code = (
        "import sys, lake.parsepool, lake.prepare; "
        "print(sorted(m for m in ('deltalake', 'lake.lake', 'lake.delta', 'lake.ingest', "
        "'lake.uploads', 'boto3', 'pandas') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-P", "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(ROOT), "PATH": ""},
    )
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
