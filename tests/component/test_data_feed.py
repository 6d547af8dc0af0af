"""The trainer's data feed: a finite shard list that cannot fill a micro-batch stops with a clear error
(it used to loop for ever, writing a warning per pass)."""

from __future__ import annotations

import pytest

from data_recipes.toy_world import write_toy_shards
from t2vturbo.config import validate
from t2vturbo.train.data_feed import DataFeed, EmptyStreamError


def _feed(urls, mb=4):
    cfg = validate(
        {
            "model": {"num_frames": 4, "height": 16, "width": 16},
            "data": {"kind": "shards", "urls": urls, "resampled": False, "shuffle_buffer": 0},
            "train": {"micro_batch_size": mb},
        }
    )
    return DataFeed(cfg, rank=0, world=1)


@pytest.mark.timeout(120)
def test_a_shard_list_of_missing_files_stops_with_a_clear_error(tmp_path):
    feed = _feed(str(tmp_path / "no" / "such-{000000..000003}.tar"))
    with pytest.raises(
        EmptyStreamError, match=r"yielded no micro-batch of 4 samples.*such-\{000000\.\.000003\}"
    ):
        feed.batch(0)


@pytest.mark.timeout(120)
def test_fewer_usable_samples_than_a_micro_batch_stops_with_a_clear_error(tmp_path):
    (url,) = write_toy_shards(tmp_path / "s", num_clips=3, shard_size=3, frames=4, size=16, seed=0)
    with pytest.raises(EmptyStreamError, match="no micro-batch of 4 samples"):
        _feed(str(url), mb=4).batch(0)
    feed = _feed(str(url), mb=3)  # exactly one micro-batch per pass: the stream goes on, epoch after epoch
    assert [len(feed.batch(m)["caption"]) for m in range(3)] == [3, 3, 3]
