"""The viewer's FastAPI app on a tiny re-ID gallery index and a tiny geo index (TestClient, no browser)."""

from __future__ import annotations

import io
import json
import math
import socket
import tempfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from sarbridge.app.cli import main  # noqa: E402
from sarbridge.app.serve.app import create_app  # noqa: E402
from sarbridge.core.errors import DataError, SarbridgeError  # noqa: E402


@pytest.fixture(scope="module")
def reid_client(reid_index: Path) -> TestClient:
    return TestClient(create_app(reid_index, top_k=5, max_upload_mb=1, device="cpu"))


@pytest.fixture(scope="module")
def geo_client(geo_setup: tuple[Path, Path]) -> TestClient:
    return TestClient(create_app(geo_setup[1], top_k=4, device="cpu"))


@pytest.fixture(autouse=True)
def private_tempdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Uploads are spooled under this test's own folder, so leftovers can be counted."""
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    return spool


def post(client: TestClient, name: str, data: bytes, modality: str | None = "optical", k: int | str | None = None):
    fields = {}
    if modality is not None:
        fields["modality"] = modality
    if k is not None:
        fields["k"] = str(k)
    return client.post("/api/query", files={"file": (name, data, "application/octet-stream")}, data=fields)


def tiff_bytes(arr: np.ndarray) -> bytes:
    """TIFF bytes; 3-D arrays are stored as (H, W, bands) grey samples."""
    buf = io.BytesIO()
    tifffile.imwrite(buf, arr, photometric="minisblack", **({"planarconfig": "contig"} if arr.ndim == 3 else {}))
    return buf.getvalue()


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(data)) as im:
        return im.size


def gallery_items(index: Path) -> list[dict]:
    return json.loads((index / "metadata.json").read_text())


# --------------------------------------------------------------------------------------------
# Re-ID gallery index
# --------------------------------------------------------------------------------------------
def test_page_and_health(reid_client: TestClient) -> None:
    page = reid_client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    text = page.text
    for needle in ('type="file"', 'id="modality"', 'value="optical"', 'value="sar"', 'id="k"', "<style>", "<script>"):
        assert needle in text, needle
    assert "<script src" not in text and "<link" not in text and "https://" not in text  # self-contained
    cfg = json.loads(text.split('id="config">', 1)[1].split("</script>", 1)[0])
    assert cfg["kind"] == "reid" and cfg["top_k"] == 5 and cfg["max_upload_mb"] == 1
    health = reid_client.get("/healthz").json()
    assert health["status"] == "ok" and health["kind"] == "reid" and health["count"] == cfg["count"] > 5


@pytest.mark.parametrize("which", ["optical", "sar"])
def test_gallery_image_finds_itself(reid_client: TestClient, reid_index: Path, which: str) -> None:
    from sarbridge.tasks.reid.gallery import query_gallery_index

    items = gallery_items(reid_index)
    pos = next(i for i, m in enumerate(items) if m["modality"] == which)
    item = items[pos]
    path = Path(item["path"])
    res = post(reid_client, path.name, path.read_bytes(), which, k=4)
    assert res.status_code == 200, res.text
    data = res.json()
    matches = data["matches"]
    assert [m["rank"] for m in matches] == [1, 2, 3, 4]
    scores = [m["score"] for m in matches]
    assert scores == sorted(scores, reverse=True)
    assert matches[0]["index"] == pos and matches[0]["path"] == str(path) and matches[0]["identity"] == item["id"]
    assert matches[0]["score"] == pytest.approx(1.0, abs=1e-4)  # unit embeddings: itself scores cos = 1
    # the same ranking as the library's own query path (which reloads everything per call)
    ref = query_gallery_index(reid_index, path, modality=which, k=4, device="cpu")["results"]
    assert [m["path"] for m in matches] == [r["path"] for r in ref]
    assert scores == pytest.approx([r["score"] for r in ref], abs=1e-5)
    q = data["query"]
    assert q["name"] == path.name and q["modality"] == which and q["preview"].startswith("data:image/png;base64,")
    # the default k is the app's top_k
    assert len(post(reid_client, path.name, path.read_bytes(), which).json()["matches"]) == 5


def test_thumbnails(reid_client: TestClient, reid_index: Path) -> None:
    n = len(gallery_items(reid_index))
    res = reid_client.get("/api/thumb/0")
    assert res.status_code == 200 and res.headers["content-type"] == "image/png"
    w, h = png_size(res.content)
    assert 0 < max(w, h) <= 160
    missing = reid_client.get(f"/api/thumb/{n}")
    assert missing.status_code == 404 and "no item" in missing.json()["error"]
    assert reid_client.get("/api/map.png").status_code == 404


BAD_CASES = {
    "text renamed .tif": ("notes.tif", b"this is not an image\n" * 10, "optical", 415, "not an image"),
    "empty file": ("empty.tif", b"", "optical", 400, "empty"),
    "corrupt tiff": ("broken.tif", b"II*\x00" + b"\x13" * 300, "optical", 422, "image 'broken.tif'"),
    "5 bands": ("five.tif", tiff_bytes(np.ones((24, 24, 5), np.uint8)), "optical", 422,
                "5 bands"),
    "2 bands optical": ("two.tif", tiff_bytes(np.ones((24, 24, 2), np.uint8)), "optical",
                        422, "2 bands"),
    "4 bands sar": ("four.tif", tiff_bytes(np.ones((24, 24, 4), np.float32)), "sar", 422,
                    "a sar query has 1 (intensity) or 2"),
    "NaN pixels": ("nan_SAR.tif", tiff_bytes(np.full((16, 16), np.nan, np.float32)), "sar", 422, "NaN"),
    "unknown modality": ("ok.tif", tiff_bytes(np.ones((16, 16), np.float32)), "lidar", 400, "unknown modality 'lidar'"),
    "no modality": ("ok.tif", tiff_bytes(np.ones((16, 16), np.float32)), None, 400, "no modality"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_uploads_are_refused_and_the_server_keeps_running(reid_client: TestClient, private_tempdir: Path,
                                                              case: str) -> None:
    name, data, modality, status, message = BAD_CASES[case]
    res = post(reid_client, name, data, modality)
    assert res.status_code == status, res.text
    body = res.json()
    assert message in body["error"] and body["hint"], body
    assert "sarbridge-upload-" not in body["error"]  # messages name the client's file, not the spool copy
    assert list(private_tempdir.iterdir()) == []  # the temporary copy is gone
    assert reid_client.get("/healthz").status_code == 200


def test_bad_k_and_non_multipart(reid_client: TestClient, reid_index: Path) -> None:
    path = Path(gallery_items(reid_index)[0]["path"])
    for k, message in (("zero", "whole number"), (0, "between 1 and 100"), (101, "between 1 and 100")):
        res = post(reid_client, path.name, path.read_bytes(), "sar", k=k)
        assert res.status_code == 400 and message in res.json()["error"]
    res = reid_client.post("/api/query", json={"file": "x"})
    assert res.status_code == 415 and "multipart" in res.json()["error"]
    res = reid_client.post("/api/query", data={"modality": "sar"})  # url-encoded
    assert res.status_code == 415 and "multipart" in res.json()["error"]
    res = reid_client.post("/api/query", files={"modality": (None, "sar")})  # multipart without a file
    assert res.status_code == 400 and "no file" in res.json()["error"]
    assert reid_client.get("/healthz").status_code == 200


def _multipart(name: str, payload: bytes, boundary: str = "sarbridgeTESTboundary") -> tuple[bytes, str]:
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"modality\"\r\n\r\noptical\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            "Content-Type: image/tiff\r\n\r\n").encode()
    return head + payload + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_oversized_uploads(reid_client: TestClient, private_tempdir: Path) -> None:
    big = b"II*\x00" + bytes(1_200_000)  # 1.2 MB, the app's limit is 1 MB
    res = post(reid_client, "big.tif", big)
    assert res.status_code == 413 and "exceeds the limit of 1 MB" in res.json()["error"]
    # without Content-Length (chunked): reading stops once the body passes the limit
    body, ctype = _multipart("big.tif", big)
    sent = []

    def chunks():
        for start in range(0, len(body), 65536):
            sent.append(start)
            yield body[start:start + 65536]

    res = reid_client.post("/api/query", content=chunks(), headers={"content-type": ctype})
    assert res.status_code == 413 and "exceeds" in res.json()["error"]
    assert list(private_tempdir.iterdir()) == []
    # a file just over the limit inside a body under the form allowance is caught while copying
    body, ctype = _multipart("edge.tif", b"II*\x00" + bytes(2**20))
    res = reid_client.post("/api/query", content=body, headers={"content-type": ctype})
    assert res.status_code == 413
    assert reid_client.get("/healthz").status_code == 200


def test_bad_index_and_settings(tmp_path: Path, reid_index: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(DataError, match="does not exist"):
        create_app(tmp_path / "nothing")
    with pytest.raises(SarbridgeError, match="top-k"):
        create_app(reid_index, top_k=0)
    with pytest.raises(SarbridgeError, match="max upload"):
        create_app(reid_index, max_upload_mb=-1)
    import shutil

    damaged = tmp_path / "damaged"
    shutil.copytree(reid_index, damaged)
    (damaged / "metadata.json").write_text("[]")
    capsys.readouterr()
    assert main(["serve", "--index", str(damaged), "--port", "8765"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "damaged" in err and "\n" not in err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--index", str(reid_index), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"cannot listen on 127.0.0.1:{port}" in err and "\n" not in err


# --------------------------------------------------------------------------------------------
# Geo map index
# --------------------------------------------------------------------------------------------
def test_geo_locates_a_sar_crop(geo_client: TestClient, geo_setup: tuple[Path, Path], crop_sar, tmp_path: Path) -> None:
    from sarbridge.data.georaster import read_georaster
    from sarbridge.tasks.geo.locate import locate

    scene, index = geo_setup
    cfg = geo_client.get("/api/info").json()
    assert cfg["kind"] == "geo" and cfg["has_map"] and (cfg["map_width"], cfg["map_height"]) == (192, 192)
    assert png_size(geo_client.get("/api/map.png").content) == (192, 192)
    query = crop_sar(scene, tmp_path / "q.tif", 64, 96)
    res = geo_client.post("/api/query", files={"file": ("q.tif", query.read_bytes())}, data={"modality": "SAR"})
    assert res.status_code == 200, res.text
    data = res.json()
    est = data["estimate"]
    ref = locate(index, query, k=4, device="cpu")  # the library's own answer for the same file
    for key in ("lon", "lat", "x", "y", "error_radius_m", "confidence", "check_error_m"):
        assert est[key] == pytest.approx(ref[key], rel=1e-6, abs=1e-6), key
    assert [m["id"] for m in data["matches"]] == [c["id"] for c in ref["candidates"]]
    assert ("registration" in est) == ("registration" in ref)  # the page says whether it registered
    if "registration" in ref:
        assert est["registration"]["registered"] == ref["registration"]["registered"]
    assert len(data["matches"]) == 4 and [m["rank"] for m in data["matches"]] == [1, 2, 3, 4]
    assert est["error_radius_m"] >= 8.0 and 0 < est["confidence"] <= 1
    # the truth: the crop's centre (the map is 96 m wide, its upper-left corner at the origin)
    opt = read_georaster(scene / "optical.tif")
    left, bottom, right, top = opt.bounds
    cx, cy = left + (64 + 16) * 0.5, top - (96 + 16) * 0.5
    assert est["check_error_m"] == pytest.approx(math.hypot(est["x"] - cx, est["y"] - cy), abs=1e-6)
    assert left <= est["x"] <= right and bottom <= est["y"] <= top
    assert est["check_error_m"] < math.hypot(right - left, top - bottom) / 2 + est["error_radius_m"]
    # the position in map-overview pixels (scale 1: 192 px map served as is; 0.5 m pixels)
    px = est["map_px"]
    assert px["x"] == pytest.approx((est["x"] - left) / 0.5) and px["y"] == pytest.approx((top - est["y"]) / 0.5)
    assert px["r"] == pytest.approx(est["error_radius_m"] / 0.5)
    thumb = geo_client.get(f"/api/thumb/{data['matches'][0]['index']}")
    assert thumb.status_code == 200 and png_size(thumb.content) == (32, 32)


def test_geo_upload_checks(geo_client: TestClient, geo_setup: tuple[Path, Path], crop_sar, tmp_path: Path) -> None:
    scene, _ = geo_setup
    query = crop_sar(scene, tmp_path / "q.tif", 0, 0).read_bytes()
    res = geo_client.post("/api/query", files={"file": ("q.tif", query)}, data={"modality": "optical"})
    assert res.status_code == 400 and "takes SAR queries" in res.json()["error"]
    rgb = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(rgb, format="PNG")
    res = geo_client.post("/api/query", files={"file": ("rgb.png", rgb.getvalue())})
    assert res.status_code == 422 and "3 bands" in res.json()["error"]
    tiny = tiff_bytes(np.ones((4, 4), np.float32))
    res = geo_client.post("/api/query", files={"file": ("tiny.tif", tiny)}, data={"modality": "sar"})
    assert res.status_code == 422 and "only 4x4 pixels" in res.json()["error"] and "8x8" in res.json()["hint"]
    assert "sarbridge-upload-" not in res.json()["error"] and "'tiny.tif'" in res.json()["error"]
    huge = crop_sar(scene, tmp_path / "huge.tif", 0, 0, side=192).read_bytes()
    res = geo_client.post("/api/query", files={"file": ("huge.tif", huge)})
    assert res.status_code == 422 and "crop the query" in res.json()["hint"]
    assert geo_client.get("/healthz").json()["kind"] == "geo"
