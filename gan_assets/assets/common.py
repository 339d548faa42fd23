"""Run tags and small helpers shared by the asset modules."""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
from pathlib import Path
from typing import Protocol

import dagster as dg

from gan_assets.storage import ObjectStore

# The retrain loop sets these on the runs it requests (sensors.py).
ATTEMPT_TAG = "gan/attempt"
PARENT_RUN_TAG = "gan/parent_run"
CONFIG_DIFF_TAG = "gan/config_diff"
# Runs that train carry this tag; dagster.yaml limits them to one at a time.
TRAINING_TAG = "gan/training"

# Groups shown in the UI's asset graph.
GROUP_INGEST = "ingest"
GROUP_MODEL = "model"
GROUP_DELIVERY = "delivery"

# Who answers for each stage (shown on every asset page and filterable in the catalog), and what
# its data is: ingest holds pseudonymous ids of real images, the model and delivery stages hold
# weights, scores and synthetic images.
OWNERS: dict[str, list[str]] = {
    GROUP_INGEST: ["team:imaging-data"],
    GROUP_MODEL: ["team:ml-engineering"],
    GROUP_DELIVERY: ["team:ml-engineering"],
}
TAGS: dict[str, dict[str, str]] = {
    GROUP_INGEST: {"stage": "ingest", "data": "pseudonymous-real-images"},
    GROUP_MODEL: {"stage": "model", "data": "weights-and-scores"},
    GROUP_DELIVERY: {"stage": "delivery", "data": "synthetic-images"},
}


def stage(group: str) -> dict[str, object]:
    """The group, owners and tags of an asset of ``group`` (``@dg.asset(**stage(GROUP_MODEL), ...)``)."""
    return {"group_name": group, "owners": OWNERS[group], "tags": TAGS[group]}


def run_attempt(context: dg.AssetExecutionContext) -> int:
    """The training attempt this run belongs to (``gan/attempt`` tag; 1 when absent)."""
    raw = context.run.tags.get(ATTEMPT_TAG, "1")
    try:
        attempt = int(raw)
    except ValueError as err:
        raise ValueError(f"run tag {ATTEMPT_TAG}={raw!r} is not an integer attempt number") from err
    if attempt < 1:
        raise ValueError(f"run tag {ATTEMPT_TAG}={raw!r} must be >= 1")
    return attempt


class ArtifactStoreResource(Protocol):
    """What assets need of the artifact store (io_managers.ArtifactStorage): the ObjectStore of its root."""

    def object_store(self) -> ObjectStore: ...


PACKAGE = "gan_assets"


@functools.cache
def _module_imports(module: str, package: str = PACKAGE) -> tuple[tuple[str, ...], str]:
    """(modules of ``package`` that ``module`` imports anywhere in its code, its normalized AST dump)."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return (), ""
    tree = ast.parse(Path(spec.origin).read_text())
    imports: set[str] = set()
    for node in ast.walk(tree):
        # Docstrings document; they do not compute. Dropping them keeps a docs edit from
        # marking every month unsynced (comments never reach the AST).
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(getattr(body[0], "value", None), ast.Constant) and isinstance(body[0].value.value, str):
            body.pop(0)
        if isinstance(node, ast.Import):
            imports.update(alias.name for alias in node.names if alias.name.split(".")[0] == package)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == package and not node.level:
            imports.add(node.module)
            # ``from gan_assets.dicom import batch`` imports a module, not only a name.
            for alias in node.names:
                if importlib.util.find_spec(f"{node.module}.{alias.name}") if _is_package(node.module) else False:
                    imports.add(f"{node.module}.{alias.name}")
    return tuple(sorted(imports)), ast.dump(tree)


def _is_package(module: str) -> bool:
    spec = importlib.util.find_spec(module)
    return bool(spec and spec.submodule_search_locations)


def code_version(module: str, package: str = PACKAGE) -> str:
    """The code version of the assets defined in ``module``: SHA-256 (16 hex) over the AST of that
    module and of every gan_assets module it imports, transitively, docstrings removed.

    A change of behaviour anywhere in that closure gives a new version (Dagster then shows the
    month's materializations as unsynced); an edit of comments or docstrings does not. The rule
    errs on the safe side: a change in a module the asset imports but does not use still counts.
    """
    seen = closure_modules(module, package)
    digest = hashlib.sha256()
    for name in seen:
        digest.update(name.encode() + b"\0" + _module_imports(name, package)[1].encode() + b"\0")
    for path in _data_files(set(seen)):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _data_files(modules: set[str]) -> list[Path]:
    """Templates and schemas beside the closure's modules (report.html.j2, report.schema.json)."""
    folders = set()
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin and spec.origin.endswith(".py"):
            folders.add(Path(spec.origin).parent)
    return sorted(p for folder in folders for p in folder.rglob("*") if p.suffix in (".j2", ".json") and p.is_file())


def closure_modules(module: str, package: str = PACKAGE) -> list[str]:
    """The modules ``code_version(module)`` covers (for docs and tests)."""
    seen: set[str] = set()
    pending = [module]
    while pending:
        name = pending.pop()
        if name not in seen:
            seen.add(name)
            pending.extend(_module_imports(name, package)[0])
    return sorted(seen)
