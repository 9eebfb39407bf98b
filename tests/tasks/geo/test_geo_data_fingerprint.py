"""The fingerprint of a localisation dataset: files and sizes, caches and hidden folders left out."""

from __future__ import annotations

from pathlib import Path

from sarbridge.tasks.geo.config import GeoDataConfig
from sarbridge.tasks.geo.data_fingerprint import geo_data_difference, geo_data_fingerprint


def _scene(root: Path) -> Path:
    root.mkdir()
    (root / "optical.tif").write_bytes(b"o" * 100)
    (root / "sar.tif").write_bytes(b"s" * 50)
    return root


def test_scene_folder_files_and_sizes(tmp_path: Path) -> None:
    root = _scene(tmp_path / "scene")
    data = GeoDataConfig(format="scene", root=str(root))
    fp = geo_data_fingerprint(data)
    assert fp["files"] == 2 and fp["parts"]["files"]["files"] == 2
    (root / "cache").mkdir()
    (root / "cache" / "patches.npy").write_bytes(b"x" * 10)
    (root / ".hidden").mkdir()
    (root / ".hidden" / "y").write_bytes(b"y")
    assert geo_data_fingerprint(data)["digest"] == fp["digest"]  # caches and hidden folders do not count
    assert geo_data_difference({"data_fingerprint": fp}, data) is None
    (root / "sar.tif").write_bytes(b"s" * 51)  # same files, another size
    diff = geo_data_difference({"data_fingerprint": fp}, data)
    assert diff is not None and diff.startswith("files: digest")
    (root / "extra.tif").write_bytes(b"e")
    assert geo_data_difference({"data_fingerprint": fp}, data) == "files: 2 -> 3 files"


def test_map_format_covers_the_named_rasters_and_old_bundles_say_nothing(tmp_path: Path) -> None:
    root = _scene(tmp_path / "scene")
    data = GeoDataConfig(format="map", map=str(root / "optical.tif"), sar=[str(root / "sar.tif")])
    fp = geo_data_fingerprint(data)
    assert fp["files"] == 2
    (root / "unrelated.txt").write_text("not part of the data")
    assert geo_data_fingerprint(data)["digest"] == fp["digest"]
    assert geo_data_difference({}, data) is None  # a bundle written before fingerprints
