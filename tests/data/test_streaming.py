"""Streaming shards: per-rank and per-worker assignment, equal counts, a seeded shuffle buffer, the DataLoader's
order and an exact skip on resume, the same pixels as the index path, whole shards fetched once from S3."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from medclip.config import PreprocessCfg
from medclip.data import streaming
from medclip.data.datasets import PairCollator, PairDataset, pairs_from_manifest
from medclip.data.shards import ShardStore, prepare_shards
from medclip.data.streaming import StreamCollate, StreamingPairs, shuffle_buffer, use_streaming
from medclip.errors import InputError
from medclip.ingest.manifest import read_manifest
from medclip.io import storage

CFG = PreprocessCfg(image_size=64)  # the tiny preset's size
ROWS_PER_SHARD = 8  # 7 shards from the 52-row tiny manifest


@pytest.fixture(scope="module")
def shards(tiny_manifest, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("stream") / "shards"
    prepare_shards(tiny_manifest, out, preprocess=CFG, workers=1, rows_per_shard=ROWS_PER_SHARD, show_progress=False)
    return out


@pytest.fixture(scope="module")
def train_pairs(tiny_manifest) -> tuple[list[dict], list[str]]:
    df, _ = read_manifest(tiny_manifest)
    return pairs_from_manifest(df[df["split"] == "train"], text_policy="sentence_sample")


def _stream(shards, train_pairs, **kwargs) -> StreamingPairs:
    pairs, texts = train_pairs
    args = {"train": True, "batch_size": 2, "shuffle_buffer": 8, **kwargs}
    return StreamingPairs(pairs, texts, args.pop("preprocess", CFG), shards=str(shards), **args)


@pytest.mark.parametrize(
    "mode,shards,expected",
    [("auto", "s3://b/s", True), ("auto", "/data/s", False), ("auto", "", False), ("on", "/data/s", True)]
    + [("True", "/data/s", True), ("off", "s3://b/s", False), ("False", "s3://b/s", False)],
)
def test_use_streaming(mode, shards, expected):
    assert use_streaming(mode, shards) is expected


def test_bad_streaming_values():
    with pytest.raises(InputError, match=r"'maybe' is not one of \('auto', 'on', 'off'\)"):
        use_streaming("maybe", "s3://b/s")
    with pytest.raises(InputError, match="needs data.shards"):
        use_streaming("on", "")


@pytest.mark.parametrize("world,workers", [(1, 1), (2, 1), (2, 2), (3, 2)])
def test_ranks_and_workers_get_disjoint_equal_runs_of_shards(shards, train_pairs, world, workers):
    ranks = [_stream(shards, train_pairs, rank=r, world_size=world, workers=workers) for r in range(world)]
    n = len(ranks[0].pairs)
    assert len({len(d) for d in ranks}) == 1 and len({d.samples_per_rank for d in ranks}) == 1  # DDP never hangs
    for epoch in (0, 1):
        slots = [d.slot_order(epoch, w) for d in ranks for w in range(workers)]
        rows = np.concatenate(slots)
        assert all(len(s) == ranks[0].batches_per_slot * 2 for s in slots)
        assert len(set(rows.tolist())) == len(rows)  # disjoint across ranks x workers
        # all rows but the remainder of the cut into slots and of each slot into batches
        assert n - len(rows) < world * workers * 2 + world * workers
        # each slot reads a run of whole shards: a cut shares at most one shard between neighbouring slots
        per_slot = [set(ranks[0].pair_shard[s].tolist()) for s in slots]
        assert sum(len(s) for s in per_slot) <= len(set().union(*per_slot)) + len(slots) - 1
        batches = ranks[0].batch_indices(epoch)
        assert len(batches) == len(ranks[0]) and all(len(b) == 2 for b in batches)
    assert not np.array_equal(ranks[0].slot_order(0, 0), ranks[0].slot_order(1, 0))  # reshuffled every epoch


def test_pairs_without_a_prepared_image_are_skipped_and_counted(shards, train_pairs, caplog):
    pairs, texts = train_pairs
    rejected = {**pairs[0], "row_id": 10**9}  # e.g. an image that failed to decode at prepare time
    with caplog.at_level("WARNING"):
        data = _stream(shards, ([*pairs, rejected], texts))
    assert len(data.pairs) == len(pairs) and f"1 of {len(pairs) + 1} pairs have no prepared image" in caplog.text


def test_shuffle_buffer_is_seeded_and_a_permutation():
    order = np.arange(100)
    a = shuffle_buffer(order, 16, np.random.default_rng(3))
    assert np.array_equal(a, shuffle_buffer(order, 16, np.random.default_rng(3)))
    assert not np.array_equal(a, shuffle_buffer(order, 16, np.random.default_rng(4)))
    assert sorted(a.tolist()) == order.tolist() and not np.array_equal(a, order)
    assert np.array_equal(shuffle_buffer(order, 1, np.random.default_rng(3)), order)  # no buffer: stream order
    # a buffer of 16 moves an item at most ~16 places forward: the early items come out early
    assert max(np.flatnonzero(a == i)[0] for i in range(10)) < 40
    assert sorted(shuffle_buffer(order[:10], 16, np.random.default_rng(3)).tolist()) == list(range(10))


def test_the_order_is_a_pure_function_of_its_inputs(shards, train_pairs):
    a, b = _stream(shards, train_pairs, workers=2), _stream(shards, train_pairs, workers=2)
    for epoch in (0, 3):
        assert [x.tolist() for x in a.batch_indices(epoch)] == [x.tolist() for x in b.batch_indices(epoch)]
    c = _stream(shards, train_pairs, workers=2, seed=1)
    assert [x.tolist() for x in a.batch_indices(0)] != [x.tolist() for x in c.batch_indices(0)]
    assert a.order_key() != c.order_key()


def _loader(data: StreamingPairs, texts, workers: int) -> DataLoader:
    collate = StreamCollate(PairCollator(None, texts, max_length=8, tokenize_text=False), seed=0)
    return DataLoader(data, batch_size=None, num_workers=workers, collate_fn=collate)


@pytest.mark.parametrize("augment", ["batch", "monai"])
def test_dataloader_workers_yield_the_planned_batches_and_a_resume_skips_exactly(shards, train_pairs, augment):
    pairs, texts = train_pairs
    data = _stream(shards, train_pairs, workers=2, preprocess=replace(CFG, augment=augment))
    loader = _loader(data, texts, workers=2)
    data.set_epoch(1)
    full = list(loader)
    planned = [[pairs[i]["row_id"] for i in idx.tolist()] for idx in data.batch_indices(1)]
    assert [b["row_id"] for b in full] == planned
    for skip in (3, 4):  # odd: the DataLoader's workers serve rotated slots
        data.skip_batches(skip)
        data.set_epoch(1)
        resumed = list(loader)
        assert [b["row_id"] for b in resumed] == planned[skip:]
        for a, b in zip(full[skip:], resumed, strict=True):
            assert torch.equal(a["image"], b["image"]) and torch.equal(a["text_index"], b["text_index"])
    if augment == "batch":  # no per-sample random steps: the images are the index path's, bit for bit
        store = PairDataset(pairs, texts, CFG, train=True, shards=ShardStore(shards))
        position = {p["row_id"]: i for i, p in enumerate(store.data)}
        want = store.__getitems__([position[r] for r in full[0]["row_id"]])
        assert torch.equal(full[0]["image"], torch.stack([w["image"] for w in want]))


def test_streams_whole_shards_from_s3_into_a_shared_cache(shards, train_pairs, s3_bucket, monkeypatch):
    url = storage.join(s3_bucket, "prepared", "shards")
    storage.upload(shards, url)
    local, remote = _stream(shards, train_pairs), _stream(url, train_pairs)
    for data in (local, remote):
        data.set_epoch(0)
    got = list(remote)
    assert [b["key"] for b in got] == [b["key"] for b in local]
    for a, b in zip(local, got, strict=True):
        assert [x["row_id"] for x in a["items"]] == [x["row_id"] for x in b["items"]]
        assert all(torch.equal(x["image"], y["image"]) for x, y in zip(a["items"], b["items"], strict=True))
    read = {streaming.shard_file(k) for k in remote.pair_shard[np.concatenate(remote.batch_indices(0))].tolist()}
    assert sorted(p.name for p in remote.source.cache.glob("shard-*.npy")) == sorted(read)  # whole files, once
    assert not list(remote.source.cache.glob(".*.tmp-*"))
    monkeypatch.setattr(streaming.ShardSource, "local_file", _warm_only(streaming.ShardSource.local_file))
    again = _stream(url, train_pairs)  # a new process on the same node: same cache key, nothing fetched
    assert again.source.cache == remote.source.cache
    again.set_epoch(0)
    assert len(list(again)) == len(got)


def _warm_only(real):
    def local_file(self, k):
        if not (self.cache / streaming.shard_file(k)).is_file():
            raise AssertionError(f"shard {k} fetched again although it is cached")
        return real(self, k)

    return local_file


def test_missing_bucket_or_folder_is_a_clear_error(train_pairs, s3_bucket, s3_server):
    secret = s3_server.env["AWS_SECRET_ACCESS_KEY"]
    with pytest.raises(InputError, match="s3://medclip-no-such-bucket/shards: the bucket .* does not exist") as exc:
        _stream("s3://medclip-no-such-bucket/shards", train_pairs)
    assert secret not in str(exc.value)
    with pytest.raises(InputError, match=f"{s3_bucket}/nothing: no shards.json there"):
        _stream(f"{s3_bucket}/nothing", train_pairs)
    with pytest.raises(InputError, match="carries credentials") as exc:
        storage.refuse_credentials("s3://AKIA:hunter2@bucket/shards", key="data.shards")
    assert "hunter2" not in str(exc.value)
