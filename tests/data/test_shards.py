from heser.config import Split
from heser.preprocess.items import MediaItem, key_part, sample_key, split_key
from heser.preprocess.shard import assign_splits


def test_keys_have_no_dots_and_round_trip():
    item = MediaItem("id00012/abc.def/00001.mp4", None, "id00012", "video")
    key = sample_key(item.video_key, 42)
    assert "." not in key
    assert split_key(key) == ("id00012", "abc-def-00001", 42)
    assert key_part("a__b.c d") == "a_b-c-d"


def test_generic_folders_are_left_out_of_video_keys():
    item = MediaItem("videos/lp_d3.mp4", None, "lp_d3", "video")
    assert item.video_key == "lp_d3__lp_d3"


def test_splits_are_by_identity_deterministic_and_complete():
    identities = [f"id{i:03d}" for i in range(29)]
    split = Split(val=0.15, test=0.15)
    first = assign_splits(identities, split, seed=0)
    assert first == assign_splits(list(reversed(identities)), split, seed=0)
    counts = {name: sum(1 for s in first.values() if s == name)
              for name in ("train", "val", "test")}
    assert counts == {"train": 21, "val": 4, "test": 4}
    assert assign_splits(identities, split, seed=1) != first


def test_small_sets_still_get_val_and_test():
    out = assign_splits(["a", "b", "c"], Split(val=0.1, test=0.1), seed=0)
    assert sorted(out.values()) == ["test", "train", "val"]
    assert set(assign_splits(["a", "b"], Split(val=0.1, test=0.1), 0).values()) == {"train"}
