"""Optional dependencies: the extras of ``pip install 'sarbridge[...]'``, imported on first use.

The core install reads data, trains and evaluates re-identification and pretraining models and
builds indexes. Four features need more, installed as extras (see ``pyproject.toml``):

``geo``
    georeferenced rasters and map localisation (rasterio, pyproj, affine);
``serve``
    the web viewer ``sarbridge serve`` (fastapi, uvicorn, python-multipart);
``diffusion``
    the Brownian Bridge translator (diffusers);
``onnx``
    ``sarbridge export`` (onnx, onnxruntime, onnxscript).

Code that needs one of them calls :func:`require` where it first needs it (never at import
time), so a missing package ends with one line naming the extra to install, e.g.
``error: rasterio is not installed; fix: pip install 'sarbridge[geo]'``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from sarbridge.core.errors import SarbridgeError

__all__ = ["EXTRAS", "MissingDependencyError", "available", "require"]

#: extra -> the distributions it installs (the same as ``[project.optional-dependencies]``).
EXTRAS: dict[str, tuple[str, ...]] = {
    "geo": ("rasterio", "pyproj", "affine"),
    "serve": ("fastapi", "uvicorn", "python-multipart"),
    "diffusion": ("diffusers",),
    "onnx": ("onnx", "onnxruntime", "onnxscript"),
}


class MissingDependencyError(SarbridgeError):
    """A package of an extra is missing (or installed but broken).

    Attributes:
        package: the distribution to install (``rasterio``, ``python-multipart`` ...).
        extra: the extra that installs it (``geo``, ``serve`` ...).
    """

    def __init__(self, package: str, extra: str, reason: str | None = None) -> None:
        self.package, self.extra = package, extra
        if reason is None:
            super().__init__(f"{package} is not installed", f"pip install 'sarbridge[{extra}]'")
        else:
            super().__init__(f"{package} is installed but cannot be imported ({reason})",
                             f"pip install --force-reinstall 'sarbridge[{extra}]'")


def require(module: str, extra: str, package: str | None = None) -> ModuleType:
    """Import ``module`` of an optional extra, or fail with one line naming the extra.

    Args:
        module: the module to import (``rasterio``, ``rasterio.errors``, ``pyproj`` ...).
        extra: the extra that provides it (a key of :data:`EXTRAS`).
        package: the distribution's name when it differs from the module's top-level name
            (``python-multipart`` for ``python_multipart``).

    Returns:
        The imported module.

    Raises:
        MissingDependencyError: the package is not installed, or its import fails.
        ValueError: ``extra`` is not a known extra (a programming error).
    """
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; known: {', '.join(EXTRAS)}")
    top = module.split(".")[0]
    try:
        importlib.import_module(top)  # the package first: a submodule may linger in sys.modules without it
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] == top:
            raise MissingDependencyError(package or top, extra) from None
        raise MissingDependencyError(package or top, extra, f"{type(exc).__name__}: {exc}") from None
    except ImportError as exc:  # installed but broken (a missing shared library, a version clash)
        raise MissingDependencyError(package or top, extra, f"{type(exc).__name__}: {exc}") from None


def available(module: str) -> bool:
    """Whether ``module`` imports (for optional steps that are skipped without it)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True
