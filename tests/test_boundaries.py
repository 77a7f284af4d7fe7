"""The import boundaries of the design: the owner side never imports mmseg, the cloud side never imports
owner or key code, the contract both read imports neither (nor torch), none of them imports the experiments
or checks that drive both sides, and the DAG imports nothing of the project (it runs in Airflow's own
environment). Every import statement counts, those inside functions too."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# package -> top-level modules it must never import
ORCHESTRATION = {"experiments", "checks"}  # they drive both sides, so neither side may need them
FORBIDDEN = {
    "pipeline": {"mmseg", "mmengine", "mmcv", "training", *ORCHESTRATION},
    "training": {"pipeline", *ORCHESTRATION},
    "contract": {"pipeline", "training", "torch", "timm", "mmseg", "mmengine", "mmcv", "zarr", "numpy", *ORCHESTRATION},
    "dags": {"pipeline", "training", "contract", "torch", "mmseg", "mmengine"},
}


def imported_modules(source: str, package: str) -> list[tuple[int, str]]:
    """(line, top-level module) of every import in ``source``, at any depth; relative imports are ``package``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.lineno, package if node.level else node.module.split(".")[0]))
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_package_imports_across_its_boundary(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files
    violations = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in files
        for line, module in imported_modules(path.read_text(), package)
        if module in FORBIDDEN[package]
    ]
    assert violations == []


def test_the_check_sees_imports_inside_functions():
    """The scan would catch a violation hidden in a function body (and a relative one)."""
    source = "def f():\n    from pipeline import keys\n    import mmseg.apis\n    from . import config\n"
    assert [module for _, module in imported_modules(source, "training")] == ["pipeline", "mmseg", "training"]
