"""Shared fixtures. Tests are offline: no code path may reach a model hub."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_collection_modifyitems(config, items):
    if SHARED_DATA.is_dir():
        return
    skip = pytest.mark.skip(reason=f"real data folder {SHARED_DATA} is absent")
    for item in items:
        if "realdata" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_archive(tmp_path_factory) -> Path:
    """A small synthetic chest X-ray archive (DICOM tree + reports + labels.csv)."""
    from medclip.synth.cxr.archive import synth_cxr

    root = tmp_path_factory.mktemp("archive")
    synth_cxr(root, studies=40, seed=1)
    return root


@pytest.fixture(scope="session")
def tiny_manifest(tiny_archive, tmp_path_factory) -> Path:
    from medclip.ingest.manifest import build_manifest, write_manifest

    out = tmp_path_factory.mktemp("manifest")
    write_manifest(build_manifest(tiny_archive, salt="test-salt", show_progress=False), out)
    return out


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_manifest, tmp_path_factory) -> Path:
    """A few training steps of the tiny preset: enough to exercise save/load and the evaluators."""
    from medclip.config import load_config
    from medclip.train.trainer import train

    out = tmp_path_factory.mktemp("run")
    cfg = load_config("tiny", [f"data.manifest={tiny_manifest}", f"train.out_dir={out}"])
    return train(cfg, show_progress=False)


@pytest.fixture(scope="session")
def ct_demo_run(tmp_path_factory) -> Path:
    """The CT demo at its smallest (16 synthetic studies, 2 steps, 16x32x32 volumes): a run folder with manifest/,
    train/final (a tiny 3-D checkpoint) and results.json, shared by the CT tests."""
    from medclip.cli import main

    out = tmp_path_factory.mktemp("ct") / "run"
    args = ["-q", "demo", "--modality", "ct", "--out", str(out), "--studies", "16", "train.max_steps=2"]
    args += ["train.batch_size=4", "preprocess.volume_shape=[16,32,32]", "preprocess.target_spacing=[10,11,11]"]
    assert main(args) == 0
    return out


@pytest.fixture(scope="session")
def report_batch() -> dict:
    """Eight short and long reports tokenised for the packaged MiniLM (right-padded to the longest): length buckets,
    packing and the training step are tested on it."""
    from medclip.text.tokenizer import load_tokenizer, tokenize

    texts = [
        "No acute disease.",
        "Small left pleural effusion with adjacent atelectasis. " * 6,
        "Normal.",
        "Mild cardiomegaly without edema.",
        "Right upper lobe opacity.",
        "Stable chest.",
        "Left basilar atelectasis. No pneumothorax. " * 3,
        "Clear lungs.",
    ]
    return tokenize(load_tokenizer("minilm"), texts, max_length=128)


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server mode on a free port (tests/s3_server.py); skips where moto[server] / s3fs are missing."""
    import sys

    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:  # importlib mode leaves the repo root off sys.path
        sys.path.insert(0, root)
    from tests.s3_server import moto_available
    from tests.s3_server import s3_server as start

    if not moto_available():
        pytest.skip("moto[server] and s3fs are needed for the object-storage tests (pip install -e '.[dev]')")
    with start() as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server, monkeypatch, tmp_path) -> str:
    """A new empty bucket on the local S3 server, its URL (``s3://NAME``); this test's environment points at the
    server (credentials and AWS_ENDPOINT_URL), as a user's does at their bucket."""
    import uuid

    import s3fs

    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MEDCLIP_CACHE", str(tmp_path / "medclip-cache"))  # fetched objects: per test
    s3fs.S3FileSystem.clear_instance_cache()
    name = f"medclip-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem().mkdir(name)
    yield f"s3://{name}"
    s3fs.S3FileSystem.clear_instance_cache()
