"""The web app's JSON API in process (FastAPI's TestClient): the same rankings as `medclip index query`, filters,
more like this, uploads (types, size, undecodable), the token, and an access log without identifiers."""

from __future__ import annotations

import base64
import io
import json
import logging
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from medclip.cli import main  # noqa: E402
from medclip.errors import InputError  # noqa: E402
from medclip.eval.grounding import Grounding  # noqa: E402
from medclip.serve.app import create_app  # noqa: E402
from medclip.serve.engine import HEAT_PX, SCREEN_MAPS, CaseService, grounding_png, overlay_to_png, to_png  # noqa: E402
from medclip.serve.server import server_token  # noqa: E402
from medclip.serve.uploads import sniff  # noqa: E402

TOKEN = "a-long-enough-test-token"


@pytest.fixture(scope="module")
def index_dir(serve_index) -> Path:
    return serve_index  # tests/serve/conftest.py: the tiny checkpoint's index with labels


@pytest.fixture(scope="module")
def service(tiny_checkpoint, index_dir) -> CaseService:
    svc = CaseService(tiny_checkpoint, index_dir)
    svc.warm_up()
    return svc


@pytest.fixture(scope="module")
def client(service) -> TestClient:
    return TestClient(create_app(service))


def _dicom(tiny_archive: Path) -> Path:
    return sorted(tiny_archive.rglob("*.dcm"))[0]


def test_search_ranks_as_index_query_does(client, index_dir, capsys):
    query = "small left apical pneumothorax"
    assert main(["-q", "index", "query", str(index_dir), query, "-k", "7"]) == 0
    capsys.readouterr()
    cli = json.loads((index_dir / "last_query.json").read_text())["results"]
    api = client.get("/api/search", params={"q": query, "k": 7}).json()["results"]
    assert [r["study_id"] for r in api] == [r["study_id"] for r in cli]
    assert [r["score"] for r in api] == [r["score"] for r in cli]
    assert len(api) == 7 and [r["rank"] for r in api] == list(range(1, 8))
    assert all("image_path" not in r for r in api)  # a file layout's path can carry identifiers
    assert "checkpoint" not in client.get("/api/search", params={"q": query}).json()["index"]  # no server paths
    assert {"impression", "split", "modality", "labels", "thumbnail"} <= set(api[0])


def test_filters_by_label_and_modality(client, service):
    info = client.get("/api/info").json()
    assert info["labels"] and info["modalities"] and info["findings"]
    label = max(info["labels"], key=info["labels"].get)
    results = client.get("/api/search", params={"q": "effusion", "k": 50, "label": label}).json()["results"]
    assert results and all(label in r["labels"] for r in results)
    studies = {r["study_id"] for r in results}
    entries = service.index.entries
    positive = set(entries["study_id"][entries["label:" + label] == 1])
    assert studies == positive  # k=50 is more than there are: every positive study, none other
    modality = sorted(info["modalities"])[0]
    rows = client.get("/api/search", params={"q": "effusion", "k": 50, "modality": modality}).json()["results"]
    assert rows and all(r["modality"] == modality for r in rows)
    bad = client.get("/api/search", params={"q": "effusion", "label": "no_such_label"})
    assert bad.status_code == 400 and "no_such_label" in bad.json()["detail"]


def test_more_like_this_leaves_the_case_out(client):
    first = client.get("/api/search", params={"q": "cardiomegaly", "k": 1}).json()["results"][0]
    similar = client.get(f"/api/similar/{first['study_id']}", params={"k": 5}).json()
    ids = [r["study_id"] for r in similar["results"]]
    assert len(ids) == 5 and first["study_id"] not in ids and len(set(ids)) == 5
    scores = [r["score"] for r in similar["results"]]
    assert scores == sorted(scores, reverse=True)
    assert client.get("/api/similar/not-a-case").status_code == 404


def test_thumbnail_is_the_preprocessed_image(client):
    r = client.get("/api/thumbnail/0")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    img = np.asarray(Image.open(io.BytesIO(r.content)))
    assert img.ndim == 2 and max(img.shape) == 256 and img.std() > 10  # an image, not a blank square
    assert client.get("/api/thumbnail/100000").status_code == 404


def test_screen_an_uploaded_dicom_and_png(client, service, tiny_archive):
    path = _dicom(tiny_archive)
    r = client.post("/api/screen", params={"k": 4}, files={"file": (path.name, path.read_bytes())})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert [row["finding"] for row in answer["screening"]] == sorted(
        service.prompt_set, key=lambda f: -next(x["score"] for x in answer["screening"] if x["finding"] == f)
    )
    row = answer["screening"][0]
    assert 0 <= row["score"] <= 1 and row["positive_prompts"] and row["negative_prompts"] is not None
    assert set(service.prompt_set) == {x["finding"] for x in answer["screening"]}
    assert len(answer["results"]) == 4
    # The upload's nearest case is the indexed image itself (same file, same preprocessing).
    own = service.index.entries.index[service.index.entries["image_path"] == str(path.resolve())][0]
    assert answer["results"][0]["entry"] == own and answer["results"][0]["score"] > 0.99
    # Heat maps of the top findings' first positive prompts, inline as PNG data URLs (nothing kept on the server).
    maps = answer["heatmaps"]
    top = answer["screening"][: min(SCREEN_MAPS, len(service.prompt_set))]
    assert [m["finding"] for m in maps] == [row["finding"] for row in top]
    assert [m["phrase"] for m in maps] == [row["positive_prompts"][0] for row in top]
    for m in maps:
        assert m["overlay"].startswith("data:image/png;base64,")
        img = Image.open(io.BytesIO(base64.b64decode(m["overlay"].split(",", 1)[1])))
        assert img.format == "PNG" and img.mode == "RGB" and max(img.size) == HEAT_PX
    png = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((80, 60)) * 255).astype(np.uint8)).save(png, format="PNG")
    r = client.post("/api/screen", files={"file": ("x.png", png.getvalue())})
    assert r.status_code == 200 and len(r.json()["screening"]) == len(service.prompt_set)
    assert len(r.json()["heatmaps"]) == len(maps)
    assert Image.open(io.BytesIO(base64.b64decode(r.json()["heatmaps"][0]["overlay"][22:]))).size == (240, 320)


def test_heatmap_of_a_phrase_on_a_case(client, service):
    assert client.get("/api/info").json()["grounding"] in ("local", "global")
    r = client.get("/api/heatmap/0", params={"q": "left pleural effusion"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png" and r.content.startswith(b"\x89PNG\r\n\x1a\n")
    img = np.asarray(Image.open(io.BytesIO(r.content)))
    assert img.ndim == 3 and img.shape[2] == 3 and max(img.shape[:2]) == HEAT_PX
    assert np.abs(img[..., 0].astype(int) - img[..., 2]).max() > 50  # coloured: a heat map over the gray image
    assert service.heatmap(0, " left pleural effusion ") is service.heatmap(0, "left pleural effusion")  # cached
    for entry in (100000, -1):
        missing = client.get(f"/api/heatmap/{entry}", params={"q": "effusion"})
        assert missing.status_code == 404 and "no entry" in missing.json()["detail"]
    for params in ({"q": ""}, {"q": "   "}, {}):
        empty = client.get("/api/heatmap/0", params=params)
        assert empty.status_code == 400 and "phrase is empty" in empty.json()["detail"]


def test_overlay_png_colours_the_peak_and_picks_the_peak_slice():
    image = np.full((40, 80), 0.5, dtype=np.float32)
    heat = np.zeros((40, 80), dtype=np.float32)
    heat[:10, :10] = 5.0  # the peak top left; the rest is the map's minimum
    img = np.asarray(Image.open(io.BytesIO(overlay_to_png(image, heat, size=160))))
    assert img.shape == (80, 160, 3)
    red, blue = img[5, 5].astype(int), img[60, 120].astype(int)
    assert red[0] > red[2] + 40 and blue[2] > blue[0] + 40  # jet: high is (dark) red, low is (dark) blue
    flat = np.asarray(Image.open(io.BytesIO(overlay_to_png(np.linspace(0, 1, 3200).reshape(40, 80), heat * 0 + 2))))
    assert (flat[..., 0] == flat[..., 2]).all()  # a flat map points nowhere: the gray image, uncoloured
    with pytest.raises(InputError, match="shape"):
        overlay_to_png(image, heat[:20])
    volume = np.zeros((6, 16, 16), dtype=np.float32)
    volume[4, 4:12, 4:12] = 1.0  # the image has a square only in slice 4
    vheat = np.zeros_like(volume)
    vheat[4, 8, 8] = 1.0  # and the map peaks there
    g = Grounding("x", vheat, vheat[:, ::8, ::8], "global", volume)
    shown = np.asarray(Image.open(io.BytesIO(grounding_png(g, size=64))))
    assert shown.shape == (64, 64, 3) and shown[32, 32].mean() > shown[2, 2].mean() + 60


@pytest.mark.parametrize(
    ("name", "data", "status"),
    [
        ("notes.txt", b"Patient John Smith, no acute process", 415),
        ("fake.dcm", b"\0" * 128 + b"DICM" + b"\x08\x00" * 300, 422),  # DICOM magic, broken body
        ("x.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 50, 422),
        ("empty.png", b"", 415),
    ],
)
def test_bad_uploads_get_a_clear_4xx_and_the_server_keeps_serving(client, name, data, status):
    r = client.post("/api/screen", files={"file": (name, data)})
    assert r.status_code == status and r.json()["detail"]
    assert client.get("/api/search", params={"q": "edema", "k": 2}).status_code == 200


def test_upload_limits(service, tiny_archive):
    small = TestClient(create_app(service, max_upload_mb=0.01))
    path = _dicom(tiny_archive)
    r = small.post("/api/screen", files={"file": (path.name, path.read_bytes())})
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    client = TestClient(create_app(service))
    two = [("file", (path.name, path.read_bytes())), ("file", (path.name, path.read_bytes()))]
    assert client.post("/api/screen", files=two).status_code == 400  # one image for a 2-D index
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("a.dcm", path.read_bytes())
    assert client.post("/api/screen", files={"file": ("s.zip", zipped.getvalue())}).status_code == 415
    assert client.post("/api/screen").status_code == 400


def test_bad_queries(client):
    assert client.get("/api/search", params={"q": "x", "k": 0}).status_code == 422
    assert client.get("/api/search", params={"q": "x", "k": 101}).status_code == 422
    assert client.get("/api/search").status_code == 422
    assert client.get("/api/search", params={"q": "   "}).status_code == 400


def test_a_query_is_never_read_as_a_server_file(client, tiny_archive):
    """The CLI takes an image path as a query; the API must not open files the client names."""
    path = str(_dicom(tiny_archive).resolve())
    answer = client.get("/api/search", params={"q": path, "k": 3}).json()
    assert answer["query_type"] == "text"


def test_token(service):
    client = TestClient(create_app(service, token=TOKEN))
    for path in ("/api/info", "/api/search?q=edema", "/api/thumbnail/0", "/api/similar/x", "/api/heatmap/0?q=edema"):
        assert client.get(path).status_code == 401
    assert client.post("/api/screen").status_code == 401
    assert (
        client.get("/api/search?q=edema", headers={"Authorization": "Bearer wrong-token-xxxxxxxx"}).status_code == 401
    )
    ok = client.get("/api/search?q=edema", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200
    assert client.get("/api/heatmap/0?q=edema", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert client.get("/api/health").json()["token_required"] is True
    assert client.get("/").status_code == 200  # the page itself holds no data; it asks for the token
    assert client.post("/api/session", json={"token": "wrong"}).status_code == 401
    r = client.post("/api/session", json={"token": TOKEN})
    assert r.status_code == 200 and TOKEN not in r.headers["set-cookie"] and "HttpOnly" in r.headers["set-cookie"]
    assert client.get("/api/info").status_code == 200  # the cookie now authorises


def test_token_rules():
    assert server_token("127.0.0.1", {}) is None and server_token("::1", {}) is None
    with pytest.raises(InputError, match="MEDCLIP_TOKEN"):
        server_token("0.0.0.0", {})
    with pytest.raises(InputError, match="at least"):
        server_token("0.0.0.0", {"MEDCLIP_TOKEN": "short"})
    assert server_token("0.0.0.0", {"MEDCLIP_TOKEN": TOKEN}) == TOKEN


def test_access_log_names_routes_not_values(client, service, caplog):
    case = service.index.entries["study_id"][0]
    with caplog.at_level(logging.INFO, logger="medclip.serve.access"):
        client.get("/api/search", params={"q": "zebra unique phrase", "k": 2})
        client.get(f"/api/similar/{case}")
        assert client.get("/api/heatmap/3", params={"q": "okapi heat phrase"}).status_code == 200
        assert client.get("/api/heatmap/99999", params={"q": "okapi missing"}).status_code == 404
    lines = [r.getMessage() for r in caplog.records if r.name == "medclip.serve.access"]
    assert any("/api/search 200" in line for line in lines) and any("/api/similar/{case_id}" in line for line in lines)
    assert any("GET /api/heatmap/{entry} 200" in line for line in lines)
    assert any("GET /api/heatmap/{entry} 404" in line for line in lines)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "zebra" not in text and case not in text and "okapi" not in text and "99999" not in text


def test_openapi_lists_the_api_and_docs_need_no_cdn(client):
    spec = client.get("/openapi.json").json()
    assert {"/api/search", "/api/similar/{case_id}", "/api/screen", "/api/health", "/api/heatmap/{entry}"} <= set(
        spec["paths"]
    )
    docs = client.get("/docs").text
    assert "cdn.jsdelivr" not in docs and "unpkg.com" not in docs


def test_sniff_and_png():
    assert sniff(b"\0" * 128 + b"DICM") == "dicom" and sniff(b"\xff\xd8\xff\xe0") == "jpeg" and sniff(b"hello") is None
    volume = np.zeros((1, 8, 16, 16), dtype=np.float32)
    volume[0, 4, 4:12, 4:12] = 1  # only the middle slice has the square
    img = np.asarray(Image.open(io.BytesIO(to_png(volume, volume=True))))
    assert img.shape == (256, 256) and img.max() == 255 and img[0, 0] == 0
