"""Every package the product imports is a runtime dependency, not only a test one.

`make demo` installs ``.[codecs]`` only; `make test` adds the test extra. A module the package
imports that only the test extra brings (jsonschema once) breaks every newcomer's first command
while the tests stay green. Two checks, both from the installed metadata of gan_assets:
- statically, every import statement in the package (also the ones inside functions, which
  importing a module does not reach) names the standard library, gan_assets, or a distribution
  in the dependency closure of ``install_requires`` plus the ``codecs`` extra;
- dynamically, every module of the package imports in a fresh interpreter in which every
  installed distribution outside that closure (pytest, moto, playwright...) cannot be imported.
"""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import json
import re
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement

PACKAGE = Path(__file__).resolve().parents[1] / "gan_assets"
RUNTIME_EXTRAS = ("codecs",)  # what `make demo` installs beside install_requires


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_closure() -> set[str]:
    """Normalised names of gan_assets and every distribution it needs at run time."""
    closure: set[str] = set()
    todo: list[tuple[str, tuple[str, ...]]] = [("gan_assets", RUNTIME_EXTRAS)]
    while todo:
        name, extras = todo.pop()
        if _normal(name) in closure and not extras:
            continue
        closure.add(_normal(name))
        try:
            requirements = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue  # an optional dependency that is not installed here
        for text in requirements:
            requirement = Requirement(text)
            wanted = requirement.marker is None or any(
                requirement.marker.evaluate({"extra": extra}) for extra in ("", *extras))
            if wanted and _normal(requirement.name) not in closure:
                todo.append((requirement.name, tuple(requirement.extras)))
    return closure


def imported_top_level_modules() -> dict[str, list[str]]:
    """{top-level module: [files importing it]} over every import statement of the package."""
    found: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                found.setdefault(name.split(".")[0], []).append(str(path.relative_to(PACKAGE.parent)))
    return found


def test_the_closure_is_read_from_metadata() -> None:
    closure = runtime_closure()
    # Direct, indirect (dagster -> grpcio) and extra (codecs) dependencies; no test-only ones.
    assert {"dagster", "torch", "pydicom", "jsonschema", "grpcio", "pylibjpeg"} <= closure
    assert not {"pytest", "moto", "playwright"} & closure


def test_every_import_of_the_package_is_a_runtime_dependency() -> None:
    closure = runtime_closure()
    owners = metadata.packages_distributions()
    missing = {}
    for module, files in imported_top_level_modules().items():
        if module in sys.stdlib_module_names or module == "gan_assets":
            continue
        distributions = {_normal(d) for d in owners.get(module, [])}
        if not distributions & closure:
            missing[module] = (sorted(distributions) or ["not installed"], sorted(set(files))[:3])
    assert not missing, (
        "the package imports modules that no runtime dependency provides (add them to install_requires "
        f"in setup.py): {missing}")


IMPORT_ALL = r"""
import importlib, importlib.abc, json, pkgutil, sys

blocked = set(json.loads(sys.argv[1]))

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r} (test-only: hidden)", name=name)
        return None

sys.meta_path.insert(0, Blocker())
import gan_assets
failed = {}
for info in pkgutil.walk_packages(gan_assets.__path__, "gan_assets."):
    if info.name.endswith("__main__"):
        continue
    try:
        importlib.import_module(info.name)
    except Exception as err:
        failed[info.name] = f"{type(err).__name__}: {err}"
print(json.dumps(failed))
"""


def test_every_module_imports_without_the_test_only_packages() -> None:
    closure = runtime_closure()
    hidden = set()
    for module, distributions in metadata.packages_distributions().items():
        if module.isidentifier() and module not in sys.stdlib_module_names \
                and not {_normal(d) for d in distributions} & closure:
            hidden.add(module)
    assert {"pytest", "moto", "playwright"} <= hidden
    proc = subprocess.run([sys.executable, "-c", IMPORT_ALL, json.dumps(sorted(hidden))],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    failed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not failed, f"modules that need a package outside install_requires: {failed}"
