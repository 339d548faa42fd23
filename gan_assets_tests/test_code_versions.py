"""code_version: every asset has one; behaviour changes move it, docstrings and comments do not."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gan_assets.assets import common
from gan_assets.assets.common import closure_modules, code_version
from gan_assets.definitions import defs


def test_every_materializable_asset_has_the_code_version_of_its_module() -> None:
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        if not node.is_materializable:
            continue
        module = node.assets_def.op.compute_fn.decorated_fn.__module__
        assert node.code_version == code_version(module), key
        assert len(node.code_version) == 16
    # The closure follows imports: the report's version covers the template it renders.
    assert "gan_assets.report.html" in closure_modules("gan_assets.assets.reporting")
    assert "gan_assets.dicom.index" in closure_modules("gan_assets.assets.ingest")


def test_the_model_core_imports_nothing_from_the_report() -> None:
    # Images and charts both need image helpers: those live below every core (storage.images).
    for module in ("gan_assets.model.previews", "gan_assets.model.train", "gan_assets.model.artifact"):
        assert [m for m in closure_modules(module) if m.startswith("gan_assets.report")] == [], module
    assert "gan_assets.storage.images" in closure_modules("gan_assets.report.charts")


def _package(root: Path, helper_body: str) -> None:
    pkg = root / "cvpkg"
    pkg.mkdir(exist_ok=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "asset.py").write_text("from cvpkg.helper import scale\n\n\ndef run(x):\n    return scale(x)\n")
    (pkg / "helper.py").write_text(helper_body)


@pytest.fixture
def fresh_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    common._module_imports.cache_clear()
    for name in [m for m in sys.modules if m.startswith("cvpkg")]:
        del sys.modules[name]


def _version(root: Path, helper_body: str) -> str:
    _package(root, helper_body)
    common._module_imports.cache_clear()
    importlib.invalidate_caches()
    return code_version("cvpkg.asset", package="cvpkg")


def test_docstrings_and_comments_do_not_move_it_behaviour_does(fresh_modules: Path) -> None:
    base = _version(fresh_modules, 'def scale(x):\n    return 2 * x\n')
    documented = _version(fresh_modules, '"""Scaling."""\n\n\ndef scale(x):\n    """Twice x."""\n    # doubled\n    return 2 * x\n')
    changed = _version(fresh_modules, 'def scale(x):\n    return 3 * x\n')
    assert documented == base  # the imported module's docs and comments do not count
    assert changed != base  # its behaviour does, through the import
    assert closure_modules("cvpkg.asset", package="cvpkg") == ["cvpkg.asset", "cvpkg.helper"]
