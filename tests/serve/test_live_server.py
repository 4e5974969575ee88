"""``medclip serve`` as users run it: a real uvicorn process over HTTP (token, concurrency, uploads, access log)."""

from __future__ import annotations

import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

PROTECTED = ("/api/search?q=pleural+effusion&k=3", "/api/info", "/api/thumbnail/0", "/api/heatmap/0?q=pleural+effusion")


@pytest.fixture(scope="session", autouse=True)  # session + autouse: set up before the session's servers
def public_host_run(live_server):
    """``serve --host 0.0.0.0`` without MEDCLIP_TOKEN, started before the shared servers so that its start-up
    (the CLI imports the app before it checks the host) overlaps theirs; the test below reads its result."""
    process = subprocess.Popen(
        live_server.command("--host", "0.0.0.0", "--port", "9"),
        env=live_server.env(token=None),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    yield process
    if process.poll() is None:
        process.kill()
    process.communicate()


@pytest.fixture(scope="module")
def plain(live_servers):
    return live_servers.plain


@pytest.fixture(scope="module")
def guarded(live_servers):
    return live_servers.guarded


def _dicom_file(tiny_archive):
    return next(p for p in sorted(tiny_archive.rglob("*.dcm")) if p.stat().st_size < 2**20)


# -- the token ---------------------------------------------------------------------------------------------------------
def test_health_needs_no_token(guarded):
    answer = httpx.get(guarded.url("/api/health"), timeout=30)
    assert answer.status_code == 200
    assert answer.json()["token_required"] is True


@pytest.mark.parametrize("path", PROTECTED)
def test_token_refused_and_accepted(guarded, path):
    with guarded.client(auth=False) as client:
        missing = client.get(path)
        assert missing.status_code == 401, missing.text
        assert missing.headers.get("www-authenticate") == "Bearer"
        assert "token" in missing.json()["detail"]
        assert client.get(path, headers=guarded.headers("wrong-" + guarded.token)).status_code == 401
        assert client.get(path, headers={"Authorization": guarded.token}).status_code == 401  # no "Bearer "
        assert client.get(path, cookies={"medclip_session": guarded.token}).status_code == 401  # the raw token
        right = client.get(path, headers=guarded.headers())
        assert right.status_code == 200, right.text


def test_session_cookie(guarded):
    with guarded.client(auth=False) as client:
        wrong = client.post("/api/session", json={"token": "not-the-token-at-all"})
        assert wrong.status_code == 401
        assert "medclip_session" not in client.cookies
        assert client.get("/api/info").status_code == 401

        right = client.post("/api/session", json={"token": guarded.token})
        assert right.status_code == 200, right.text
        set_cookie = right.headers["set-cookie"]
        assert set_cookie.startswith("medclip_session=")
        assert "httponly" in set_cookie.lower() and "samesite=strict" in set_cookie.lower()
        assert guarded.token not in set_cookie  # a hash of the token, never the token
        # the client now sends the cookie only: no Authorization header anywhere
        info = client.get("/api/info")
        assert info.status_code == 200, info.text
        assert "authorization" not in {k.lower() for k in info.request.headers}
        assert client.get("/api/search", params={"q": "cardiomegaly", "k": 2}).status_code == 200


def test_public_host_without_token_exits_2(public_host_run):
    try:
        stdout, stderr = public_host_run.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        public_host_run.kill()
        pytest.fail("medclip serve --host 0.0.0.0 without MEDCLIP_TOKEN kept running: it must exit 2")
    assert public_host_run.returncode == 2, stdout + stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("medclip serve: error:") and "MEDCLIP_TOKEN" in last, stderr
    assert "Uvicorn running" not in stdout + stderr


# -- concurrency -------------------------------------------------------------------------------------------------------
QUERIES = [
    f"{size} {side} {finding}"
    for size, side, finding in zip(
        ["small", "large", "moderate", "tiny", "mild"] * 4,
        ["left", "right", "bilateral", "left apical", "right basal"] * 4,
        ["pneumothorax"] * 5 + ["pleural effusion"] * 5 + ["consolidation"] * 5 + ["cardiomegaly"] * 5,
        strict=True,
    )
]


def test_concurrent_searches(plain):
    assert len(set(QUERIES)) == 20
    k = 5
    with plain.client() as client:

        def search(q):
            return client.get("/api/search", params={"q": q, "k": k})

        with ThreadPoolExecutor(max_workers=20) as pool:
            answers = list(pool.map(search, QUERIES))
        for q, answer in zip(QUERIES, answers, strict=True):
            assert answer.status_code == 200, (q, answer.text)
            assert len(answer.json()["results"]) == k, q
        # the same ranking as one query at a time: no answer was mixed up with another's
        for q, answer in list(zip(QUERIES, answers, strict=True))[:4]:
            alone = search(q).json()["results"]
            assert [r["study_id"] for r in answer.json()["results"]] == [r["study_id"] for r in alone]


# -- uploads -----------------------------------------------------------------------------------------------------------
def _still_serving(server):
    with server.client() as client:
        assert client.get("/api/health").status_code == 200
        search = client.get("/api/search", params={"q": "left pleural effusion", "k": 3})
        assert search.status_code == 200 and len(search.json()["results"]) == 3


def test_huge_upload_413(guarded):
    huge = b"\0" * 128 + b"DICM" + b"\x01" * (3 * 2**20)
    with guarded.client() as client:
        answer = client.post("/api/screen", files={"file": ("huge.dcm", huge, "application/dicom")})
        assert answer.status_code == 413, answer.text
        assert "1 MiB" in answer.json()["detail"]
    _still_serving(guarded)


def test_huge_streamed_upload_413(guarded):
    """No Content-Length (chunked): the limit holds while the body streams in."""
    boundary = "medclipboundary"

    def body():
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="huge.dcm"\r\n'
            "Content-Type: application/dicom\r\n\r\n"
        ).encode()
        for _ in range(48):
            yield b"\x01" * 2**16  # 3 MiB in all
        yield f"\r\n--{boundary}--\r\n".encode()

    with guarded.client() as client:
        answer = client.post(
            "/api/screen", content=body(), headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
        )
        assert "content-length" not in {k.lower() for k in answer.request.headers}
        assert answer.status_code == 413, answer.text
    _still_serving(guarded)


def test_wrong_type_415_and_undecodable_422(guarded):
    with guarded.client() as client:
        text = client.post("/api/screen", files={"file": ("notes.dcm", b"just some text\n" * 50, "application/dicom")})
        assert text.status_code == 415, text.text
        broken = b"\0" * 128 + b"DICM" + b"\x02" * 4096  # a DICOM preamble, then nothing DICOM can read
        bad = client.post("/api/screen", files={"file": ("broken.dcm", broken, "application/dicom")})
        assert bad.status_code == 422, bad.text
    _still_serving(guarded)


def test_screen_a_dicom(guarded, tiny_archive):
    with guarded.client() as client:
        findings = client.get("/api/info").json()["findings"]
        dicom = _dicom_file(tiny_archive)
        answer = client.post("/api/screen", params={"k": 4}, files={"file": ("study.dcm", dicom.read_bytes())})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert sorted(row["finding"] for row in body["screening"]) == sorted(findings)
        assert len(body["results"]) == 4


# -- the access log ----------------------------------------------------------------------------------------------------
def _wait_for(server, text: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        out = server.output()
        if text in out or time.monotonic() > deadline:
            return out
        time.sleep(0.1)


def test_access_log_names_routes_not_values(plain, tiny_archive):
    phrase = "zebra-unique-phrase"
    with plain.client() as client:
        found = client.get("/api/search", params={"q": f"{phrase} with a left pleural effusion", "k": 5})
        assert found.status_code == 200
        client.get("/api/search", params={"q": phrase, "k": 3, "label": "pneumothorax"})
        results = found.json()["results"]
        study = results[0]["study_id"]
        similar = client.get(f"/api/similar/{study}", params={"k": 3})
        assert similar.status_code == 200
        missing_case = "no-such-case-quokka"
        assert client.get(f"/api/similar/{missing_case}").status_code == 404
        assert client.get(f"/api/thumbnail/{results[0]['entry']}").status_code == 200
        heat = client.get(f"/api/heatmap/{results[0]['entry']}", params={"q": f"{phrase} heat map"})
        assert heat.status_code == 200 and heat.content.startswith(b"\x89PNG")
        assert client.get("/api/heatmap/0", params={"q": "  "}).status_code == 400
        upload_name = "patient-wombat-smith.dcm"
        screened = client.post("/api/screen", files={"file": (upload_name, _dicom_file(tiny_archive).read_bytes())})
        assert screened.status_code == 200, screened.text
        client.get("/api/health", params={"marker": "end-of-access-log-test"})

    out = _wait_for(plain, "POST /api/screen 200")
    assert "GET /api/search 200" in out
    assert "GET /api/similar/{case_id} 200" in out
    assert "GET /api/similar/{case_id} 404" in out
    assert "GET /api/thumbnail/{entry} 200" in out
    assert "GET /api/heatmap/{entry} 200" in out and "GET /api/heatmap/{entry} 400" in out
    assert "POST /api/screen 200" in out
    for secret in (phrase, "zebra", "quokka", "wombat", "end-of-access-log-test", "q=", "heat map", study):
        assert secret not in out, f"{secret!r} is in the server's log"
    for row in results + similar.json()["results"]:
        assert row["study_id"] not in out
        for text in (row.get("impression"), row.get("snippet")):
            if text and len(text) >= 12:
                assert text not in out and text[:40] not in out, f"report text {text[:40]!r} is in the server's log"
