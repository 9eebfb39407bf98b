"""Optional extras: require(), pyproject's extras, and one clear line per missing package at each entry point.

A missing package is simulated with ``sys.modules[name] = None`` (what Python does for a module that
failed to import: ``import name`` then raises ModuleNotFoundError), or, for the import of the whole
package, with finders that do not find the extras' packages (as in a core-only install).
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import numpy as np
import pytest

import sarbridge
from sarbridge.app.cli import main
from sarbridge.core.errors import SarbridgeError
from sarbridge.core.optional import EXTRAS, MissingDependencyError, available, require

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
#: every module of the extras' packages (hidden together in the core-install test)
EXTRA_MODULES = ("rasterio", "pyproj", "affine", "fastapi", "starlette", "uvicorn", "python_multipart", "multipart",
                 "diffusers", "onnx", "onnxruntime", "onnxscript")


def _line(extra: str, package: str) -> str:
    return f"error: {package} is not installed; fix: pip install 'sarbridge[{extra}]'\n"


def _cli(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(argv)
    return rc, capsys.readouterr().err


# --- the helper ---------------------------------------------------------------------------------

def test_require_returns_the_module_or_names_the_extra(monkeypatch):
    assert require("json", "geo") is __import__("json")
    assert require("os.path", "geo") is __import__("os").path
    errors = require("rasterio.errors", "geo")  # installed here; the submodule stays in sys.modules below
    assert errors.__name__ == "rasterio.errors" and sys.modules["rasterio.errors"] is errors
    monkeypatch.setitem(sys.modules, "rasterio", None)
    with pytest.raises(MissingDependencyError) as info:
        require("rasterio", "geo")
    assert str(info.value) == "rasterio is not installed; fix: pip install 'sarbridge[geo]'"
    assert (info.value.package, info.value.extra) == ("rasterio", "geo")
    assert isinstance(info.value, SarbridgeError)  # the CLI prints it as one line and exits 2
    with pytest.raises(MissingDependencyError, match="^rasterio is not installed"):  # a submodule names the package
        require("rasterio.errors", "geo")
    monkeypatch.setitem(sys.modules, "python_multipart", None)
    with pytest.raises(MissingDependencyError, match="^python-multipart is not installed; fix: .*sarbridge\\[serve\\]"):
        require("python_multipart", "serve", package="python-multipart")
    with pytest.raises(ValueError, match="unknown extra 'gis'"):
        require("json", "gis")
    assert available("json") and not available("rasterio") and not available("no_such_module_h4")


def test_a_broken_install_is_not_called_missing(tmp_path, monkeypatch):
    (tmp_path / "h4_broken").mkdir()
    (tmp_path / "h4_broken" / "__init__.py").write_text("raise ImportError('libgdal.so.99: cannot open shared object')\n")
    (tmp_path / "h4_needs_dep.py").write_text("import h4_dependency_that_is_absent\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MissingDependencyError) as info:
        require("h4_broken", "geo")
    assert str(info.value) == ("h4_broken is installed but cannot be imported (ImportError: libgdal.so.99: cannot "
                               "open shared object); fix: pip install --force-reinstall 'sarbridge[geo]'")
    with pytest.raises(MissingDependencyError, match="h4_needs_dep is installed but cannot be imported .*absent"):
        require("h4_needs_dep", "diffusion")


def test_extras_match_pyproject():
    def names(reqs: list[str]) -> set[str]:
        return {r.split(";")[0].split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower() for r in reqs}

    opt = PYPROJECT["project"]["optional-dependencies"]
    for extra, packages in EXTRAS.items():
        assert names(opt[extra]) == set(packages), extra
    assert opt["all"] == [f"sarbridge[{','.join(EXTRAS)}]"]
    assert "sarbridge[all]" in opt["dev"]  # make setup installs '.[dev]': everything
    core = names(PYPROJECT["project"]["dependencies"])
    assert not core & {p for packages in EXTRAS.values() for p in packages}
    assert {"torch", "torchvision", "timm", "numpy", "faiss-cpu", "matplotlib", "scikit-learn"} <= core


# --- each extra at its entry points --------------------------------------------------------------

def test_geo_extra(monkeypatch, capsys, tmp_path):
    from sarbridge.data.georaster import GeoRaster, read_georaster, write_georaster

    raster = GeoRaster(np.zeros((1, 4, 4), np.float32), (10.0, 0.0, 500000.0, 0.0, -10.0, 0.0), "EPSG:32631")
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "rasterio", None)
        for call in (lambda: read_georaster(tmp_path / "map.tif"),
                     lambda: write_georaster(tmp_path / "o.tif", raster.array, raster.transform, raster.crs)):
            with pytest.raises(MissingDependencyError, match="^rasterio is not installed; fix: pip install 'sarbridge\\[geo\\]'$"):
                call()
        rc, err = _cli(capsys, ["geo", "synth", "--out", str(tmp_path / "scene"), "--size", "64"])
        assert (rc, err) == (2, _line("geo", "rasterio"))
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "pyproj", None)
        with pytest.raises(MissingDependencyError, match="^pyproj is not installed"):
            raster.to_lonlat([0.0], [0.0])
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "affine", None)
        with pytest.raises(MissingDependencyError, match="^affine is not installed"):
            GeoRaster(np.zeros((1, 2, 2)), (1.0, 0.0, 0.0, 0.0, -1.0, 0.0), "EPSG:32631")
    lon, lat = raster.to_lonlat([500000.0], [0.0])  # all present again: the real thing works
    assert abs(float(lon[0]) - 3.0) < 1e-6 and abs(float(lat[0])) < 1e-6  # UTM 31N false easting = 3 degrees E


@pytest.mark.parametrize("module, package", [("fastapi", "fastapi"), ("uvicorn", "uvicorn"),
                                             (("python_multipart", "multipart"), "python-multipart")])
def test_serve_extra(monkeypatch, capsys, tmp_path, module, package):
    for name in (module if isinstance(module, tuple) else (module,)):
        monkeypatch.setitem(sys.modules, name, None)
    # before the port, the index or the model are looked at: a missing index is not what is reported
    rc, err = _cli(capsys, ["serve", "--index", str(tmp_path / "no-index")])
    assert (rc, err) == (2, _line("serve", package))
    if module != "uvicorn":  # the Python entry point checks what the application itself needs
        from sarbridge.app.serve import create_app

        with pytest.raises(MissingDependencyError, match=f"^{package} is not installed"):
            create_app(tmp_path / "no-index")


def test_diffusion_extra(monkeypatch, capsys, tmp_path):
    from PIL import Image

    from sarbridge.tasks.bridge.model import UNetConfig, build_unet, unet_from_config_dict

    for i in range(4):
        for sub, shape in (("opt", (16, 8, 3)), ("sar", (16, 8))):
            (tmp_path / "pairs" / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full(shape, 40 * i, np.uint8)).save(tmp_path / "pairs" / sub / f"p{i}.png")
    monkeypatch.setitem(sys.modules, "diffusers", None)
    for call in (lambda: build_unet(UNetConfig(), [16, 8]), lambda: unet_from_config_dict({})):
        with pytest.raises(MissingDependencyError, match="^diffusers is not installed; fix: pip install 'sarbridge\\[diffusion\\]'$"):
            call()
    rc, err = _cli(capsys, ["diffusion-train", "--config", str(ROOT / "configs" / "bbdm_demo.yaml"),
                            "--data", str(tmp_path / "pairs"), "--out", str(tmp_path / "run"), "--quiet",
                            "--set", "data.resolution=[16,8]"])
    assert (rc, err) == (2, _line("diffusion", "diffusers"))
    assert not (tmp_path / "run" / "last.pt").exists()


def test_onnx_extra(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "onnx", None)
    rc, err = _cli(capsys, ["export", "--model", str(tmp_path / "best.pt"), "--out", str(tmp_path / "m.onnx")])
    assert (rc, err) == (2, _line("onnx", "onnx"))


# --- a core-only install ------------------------------------------------------------------------

def test_extras_are_imported_only_through_require():
    """No ``import rasterio`` (or any extra's module) in the package: ``require()`` at the point of use,
    except under ``if TYPE_CHECKING:`` and in the FastAPI application module (imported after the check)."""
    pkg = Path(sarbridge.__file__).resolve().parent
    allowed = {pkg / "app" / "serve" / "app.py"}
    bad = []
    for path in sorted(pkg.rglob("*.py")):
        tree = ast.parse(path.read_text())
        skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                for stmt in node.body for n in ast.walk(stmt)}
        for node in ast.walk(tree):
            if id(node) in skip or path in allowed:
                continue
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            bad += [f"{path.relative_to(pkg)}:{node.lineno}: {n}" for n in names if n.split(".")[0] in EXTRA_MODULES]
    assert not bad, "import an extra with sarbridge.core.optional.require:\n" + "\n".join(bad)


_CORE_ONLY = """
import importlib, importlib.abc, pkgutil, sys
HIDDEN = set({hidden!r})

class Hide(importlib.abc.MetaPathFinder):
    def __init__(self, inner):
        self.inner = inner

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HIDDEN:
            return None  # not installed
        return self.inner.find_spec(name, path, target)

    def invalidate_caches(self):
        getattr(self.inner, "invalidate_caches", lambda: None)()

    def find_distributions(self, *args, **kwargs):  # importlib.metadata asks the finders too
        find = getattr(self.inner, "find_distributions", None)
        return find(*args, **kwargs) if find else iter(())

sys.meta_path[:] = [Hide(f) for f in sys.meta_path]
import sarbridge
failed = []
for m in pkgutil.walk_packages(sarbridge.__path__, "sarbridge."):
    if not m.name.endswith("__main__"):
        try:
            importlib.import_module(m.name)
        except ImportError as exc:
            failed.append(f"{{m.name}}: {{exc}}")
print("FAILED", failed)
print("LOADED", sorted(k for k in sys.modules if k.split(".")[0] in HIDDEN))
import sarbridge
from sarbridge.app.cli import main
print("RC", main(["serve", "--index", "nowhere"]))
"""


@pytest.mark.slow  # about 15 s: imports every module in a fresh interpreter
def test_core_install_imports_every_module_without_the_extras():
    code = textwrap.dedent(_CORE_ONLY.format(hidden=EXTRA_MODULES))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    out = proc.stdout.splitlines()
    assert proc.returncode == 0, proc.stderr[-2000:]
    # only the FastAPI application module needs its extra at import (route annotations resolve there);
    # it is imported by sarbridge.app.serve.create_app after the check of the extra
    assert "FAILED [\"sarbridge.app.serve.app: No module named 'fastapi'\"]" in out, out
    assert "LOADED []" in out and "RC 2" in out
    assert _line("serve", "fastapi") in proc.stderr
