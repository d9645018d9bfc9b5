"""ProbeSet: every constructor on real inputs, seeded selection, stratification, save/load, shards, errors."""

from __future__ import annotations

import math
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from optional import need

from grokmon.errors import ConfigError, GrokmonError, ProbeError
from grokmon.probe import ProbeSet, stratified_counts

os.environ.setdefault("HF_HUB_OFFLINE", "1")

DOMAINS = ("code", "math", "web")


def _rows(n=60, length=20, domains=DOMAINS, short_every=None):
    """A list-of-dicts 'dataset' whose sample i starts with token i (so rows are identifiable)."""
    rows = []
    for i in range(n):
        ln = length if short_every is None or i % short_every else length // 2
        rows.append({"input_ids": [i] + [(i * 7 + j) % 50 + 100 for j in range(ln - 1)],
                     "domain": domains[i % len(domains)], "text": f"doc {i}"})
    return rows


# ---------------------------------------------------------------------------- token ids


def test_from_token_ids_fixed_length_has_no_mask():
    ids = torch.arange(40).reshape(4, 10)
    p = ProbeSet.from_token_ids(ids, min_length=4)
    assert p.attention_mask is None and p.input_ids.dtype == torch.long
    assert torch.equal(p.input_ids, ids) and len(p) == 4 and p.num_tokens == 40 and p.seq_len == 10
    assert p.lengths.tolist() == [10] * 4 and p.groups is None and p.is_padding.tolist() == [False] * 4


def test_from_token_ids_ragged_truncate_and_pad():
    p = ProbeSet.from_token_ids([[1, 2, 3, 4, 5, 6], [7, 8, 9], [10, 11, 12, 13]], seq_len=5,
                                pad_token_id=99, min_length=3)
    assert p.input_ids.tolist() == [[1, 2, 3, 4, 5], [7, 8, 9, 99, 99], [10, 11, 12, 13, 99]]
    assert p.attention_mask.tolist() == [[1] * 5, [1, 1, 1, 0, 0], [1, 1, 1, 1, 0]]
    assert p.num_tokens == 12 and p.source["seq_len"] == 5
    # all samples shorter than seq_len: padded to the longest one only
    q = ProbeSet.from_token_ids([[1, 2, 3], [4, 5, 6]], seq_len=256, min_length=2)
    assert q.input_ids.shape == (2, 3) and q.attention_mask is None


def test_from_token_ids_attention_mask_in_left_padding_out_right():
    ids = torch.tensor([[0, 0, 5, 6, 7], [1, 2, 3, 4, 5]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    p = ProbeSet.from_token_ids(ids, attention_mask=mask, min_length=3)
    assert p.input_ids.tolist() == [[5, 6, 7, 0, 0], [1, 2, 3, 4, 5]]
    assert p.attention_mask.tolist() == [[1, 1, 1, 0, 0], [1] * 5]


def test_groups_labels_and_tensor_ids():
    ids = torch.arange(60).reshape(6, 10)
    p = ProbeSet.from_token_ids(ids, groups=["web", "code", "web", "code", "math", "math"], min_length=4)
    assert p.group_names == ("code", "math", "web")
    assert p.groups.tolist() == [2, 0, 2, 0, 1, 1]
    assert p.group_counts() == {"code": 2, "math": 2, "web": 2}
    q = ProbeSet.from_token_ids(ids, groups=torch.tensor([0, 0, 1, 1, 1, 0]), group_names=["a", "b"], min_length=4)
    assert q.group_names == ("a", "b") and q.groups.tolist() == [0, 0, 1, 1, 1, 0]
    r = ProbeSet.from_token_ids(ids, groups=[10, 2, 10, 2, 2, 10], min_length=4)  # ints sort numerically
    assert r.group_names == ("2", "10") and r.groups.tolist() == [1, 0, 1, 0, 0, 1]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(ids=torch.zeros(0, 10, dtype=torch.long)), "empty"),
        (dict(ids=[]), "empty"),
        (dict(ids=torch.rand(3, 10)), "integer token ids"),
        (dict(ids=[[1, 2, 3.5, 4, 5, 6, 7, 8]]), "must be integers"),
        (dict(ids=[["a", "b"] * 4]), "must be integers"),
        (dict(ids="some text"), "from_texts"),
        (dict(ids=torch.tensor([[1, 2, -100, 4, 5, 6, 7, 8]])), "negative token id -100"),
        (dict(ids=[[1] * 10, [2] * 5]), r"sample 1 has 5 tokens, fewer than min_length=8"),
        (dict(ids=[[1] * 10, [2] * 9], pad_token_id=None), "pad_token_id"),
        (dict(ids=torch.ones(4, 10, dtype=torch.long), groups=["a", "a", "b"]), "3 labels but there are 4"),
        (dict(ids=torch.ones(4, 10, dtype=torch.long), groups=["a", "a", "a", "b"]),
         "group 'b' has 1 sample: pathway distance needs pairs; add samples or merge the group"),
        (dict(ids=torch.ones(2, 10, dtype=torch.long), groups=["a", None]), "None"),
    ],
)
def test_from_token_ids_errors(kwargs, match):
    ids = kwargs.pop("ids")
    with pytest.raises(ProbeError, match=match) as info:
        ProbeSet.from_token_ids(ids, **kwargs)
    assert isinstance(info.value, GrokmonError)


def test_validate_vocab():
    p = ProbeSet.from_token_ids(torch.tensor([[1, 2, 3, 4], [5, 6, 7, 31999]]), min_length=4)
    p.validate(32000)
    with pytest.raises(ProbeError) as info:
        p.validate(32)
    assert str(info.value) == ("tokenizer/vocab mismatch: probe has token id 31999 but the model's vocabulary "
                               "has 32 ids; build the probe with the model's tokenizer")
    with pytest.raises(ProbeError, match="31999"):
        ProbeSet.from_token_ids(p.input_ids, min_length=4, vocab_size=1000)


# ---------------------------------------------------------------------------- datasets


def test_from_dataset_list_of_dicts_seeded():
    ds = _rows()
    a = ProbeSet.from_dataset(ds, n=12, seq_len=16, seed=3)
    b = ProbeSet.from_dataset(ds, n=12, seq_len=16, seed=3)
    c = ProbeSet.from_dataset(ds, n=12, seq_len=16, seed=4)
    assert a.fingerprint() == b.fingerprint() and a.fingerprint() != c.fingerprint()
    assert a.input_ids.shape == (12, 16) and a.attention_mask is None
    idx = a.source["indices"]
    assert len(set(idx)) == 12 and idx == sorted(idx)
    for row, i in zip(a.input_ids.tolist(), idx):  # each probe row is its dataset row, truncated
        assert row == ds[i]["input_ids"][:16]
    # the selection is the seeded permutation's first n: reference with the same generator
    ref = sorted(torch.randperm(60, generator=torch.Generator().manual_seed(3))[:12].tolist())
    assert idx == ref


def test_from_dataset_stratified_as_equal_as_possible():
    ds = _rows(60) + [{"input_ids": list(range(200, 220)), "domain": "rare"} for _ in range(3)]
    p = ProbeSet.from_dataset(ds, n=20, seq_len=16, seed=0, group_by="domain")
    # 4 groups, share 5 each; "rare" has 3 -> 3, and its 2 spare go to the first groups by name
    assert p.group_counts() == {"code": 6, "math": 6, "rare": 3, "web": 5}
    for row, gi, i in zip(p.input_ids.tolist(), p.groups.tolist(), p.source["indices"]):
        assert ds[i]["domain"] == p.group_names[gi] and row == ds[i]["input_ids"][:16]
    q = ProbeSet.from_dataset(ds, n=20, seq_len=16, seed=0, group_by=lambda r: r["domain"])
    assert q.fingerprint() == p.fingerprint()


def _greedy_reference(available, n):
    """One sample at a time to the smallest not-full group (ties: first group)."""
    counts = [0] * len(available)
    for _ in range(n):
        i = min((c, i) for i, c in enumerate(counts) if c < available[i])[1]
        counts[i] += 1
    return counts


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 30), min_size=1, max_size=8), st.data())
def test_stratified_counts_matches_greedy_reference(available, data):
    n = data.draw(st.integers(0, sum(available)))
    assert stratified_counts(available, n) == _greedy_reference(available, n)


def test_from_dataset_torch_datasets():
    class DictDS(torch.utils.data.Dataset):
        def __len__(self):
            return 30

        def __getitem__(self, i):
            ln = 12 if i % 2 else 9
            ids = torch.arange(i, i + 12)
            mask = torch.tensor([1] * ln + [0] * (12 - ln))
            return {"input_ids": ids, "attention_mask": mask, "domain": "ab"[i % 2]}

    p = ProbeSet.from_dataset(DictDS(), n=10, seq_len=12, seed=1, group_by="domain", min_length=8)
    assert p.group_counts() == {"a": 5, "b": 5}
    for row, m, i in zip(p.input_ids.tolist(), p.attention_mask.tolist(), p.source["indices"]):
        ln = 12 if i % 2 else 9
        assert row[:ln] == list(range(i, i + ln)) and m == [1] * ln + [0] * (12 - ln)

    class TensorRows(torch.utils.data.Dataset):
        def __len__(self):
            return 20

        def __getitem__(self, i):
            return torch.full((10,), i)

    t = ProbeSet.from_dataset(TensorRows(), n=5, seed=0)
    assert [r[0] for r in t.input_ids.tolist()] == t.source["indices"]

    tds = torch.utils.data.TensorDataset(torch.arange(200).reshape(20, 10), torch.arange(20) % 2)
    g = ProbeSet.from_dataset(tds, n=6, group_by=1, seed=0)
    assert g.group_counts() == {"0": 3, "1": 3}
    assert all(row[0] // 10 % 2 == int(g.group_names[gi]) for row, gi in zip(g.input_ids.tolist(), g.groups.tolist()))


def test_from_dataset_hugging_face_dataset():
    """The README's call on a real ``datasets.Dataset``: the rows, groups and masks of the list-of-dicts path."""
    datasets = need("datasets")
    rows = _rows(60, short_every=3)
    for r in rows:
        r["attention_mask"] = [1] * len(r["input_ids"])
    ds = datasets.Dataset.from_list(rows)
    ref = ProbeSet.from_dataset(rows, n=12, seq_len=16, seed=5, group_by="domain")
    for form in (ds, ds.with_format("torch")):
        p = ProbeSet.from_dataset(form, n=12, seq_len=16, seed=5, group_by="domain")
        assert p.source["indices"] == ref.source["indices"] and p.source["dataset"] == "Dataset"
        assert p.fingerprint() == ref.fingerprint()  # ids, masks, groups and group names
        assert p.group_counts() == {"code": 4, "math": 4, "web": 4}
        for row, gi, i in zip(p.input_ids.tolist(), p.groups.tolist(), p.source["indices"]):
            assert row[:10] == rows[i]["input_ids"][:10] and p.group_names[gi] == rows[i]["domain"]
    # a tokenized dataset as the README's train_ds: text in, map() adds the ids
    text = datasets.Dataset.from_dict({"text": [" ".join(f"t{j}" for j in range(i, i + 12)) for i in range(20)],
                                       "domain": ["ab"[i % 2] for i in range(20)]})
    tokenized = text.map(lambda r: {"input_ids": [int(w[1:]) for w in r["text"].split()]})
    q = ProbeSet.from_dataset(tokenized, n=6, seq_len=12, seed=0, group_by="domain")
    assert q.group_counts() == {"a": 3, "b": 3}
    assert [r[0] for r in q.input_ids.tolist()] == q.source["indices"]


def test_from_dataset_errors():
    ds = _rows(10)
    with pytest.raises(ProbeError, match=r"n=11 is larger than the dataset \(10 samples\)"):
        ProbeSet.from_dataset(ds, n=11)
    with pytest.raises(ProbeError, match="n must be a positive int"):
        ProbeSet.from_dataset(ds, n=0)
    with pytest.raises(ProbeError, match="no 'tokens' field"):
        ProbeSet.from_dataset(ds, n=4, column="tokens")
    with pytest.raises(ProbeError, match="no field 'lang'"):
        ProbeSet.from_dataset(ds, n=4, group_by="lang")
    with pytest.raises(ProbeError, match=r"dataset row 0 has 10 tokens, fewer than min_length=12"):
        ProbeSet.from_dataset(_rows(10, length=20, short_every=1), n=10, min_length=12)

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            yield from ()

    with pytest.raises(ProbeError, match="from_dataloader"):
        ProbeSet.from_dataset(Stream(), n=2)


def test_from_dataloader_seeded_and_leaves_rng_alone():
    data = torch.arange(64 * 12).reshape(64, 12)
    ds = [{"input_ids": data[i], "attention_mask": torch.ones(12, dtype=torch.long), "domain": "xyz"[i % 3]}
          for i in range(64)]
    dl = torch.utils.data.DataLoader(ds, batch_size=8, shuffle=True)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = ProbeSet.from_dataloader(dl, n=20, seed=5)
    assert torch.equal(torch.get_rng_state(), before)  # training's RNG stream untouched
    b = ProbeSet.from_dataloader(dl, n=20, seed=5)
    c = ProbeSet.from_dataloader(dl, n=20, seed=6)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    starts = [r[0] // 12 for r in a.input_ids.tolist()]
    assert len(set(starts)) == 20 and all(torch.equal(a.input_ids[k], data[s]) for k, s in enumerate(starts))

    g = ProbeSet.from_dataloader(dl, n=12, seed=5, group_by="domain")
    assert g.group_counts() == {"x": 4, "y": 4, "z": 4}

    gen = torch.Generator().manual_seed(7)
    dl2 = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data), batch_size=8, shuffle=True,
                                      generator=gen)
    state = gen.get_state()
    t = ProbeSet.from_dataloader(dl2, n=10, seed=0)
    assert torch.equal(gen.get_state(), state) and t.input_ids.shape == (10, 12)
    with pytest.raises(ProbeError, match=r"larger than the dataloader \(64 samples\)"):
        ProbeSet.from_dataloader(dl, n=100)
    assert ProbeSet.from_dataset(dl, n=20, seed=5).fingerprint() == a.fingerprint()  # DataLoader passes on


# ---------------------------------------------------------------------------- texts


@pytest.fixture(scope="module")
def tokenizer():
    tokenizers = pytest.importorskip("tokenizers")
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1}
    for w in "the cat sat on a mat dog ran far away and then slept under tree".split():
        vocab.setdefault(w, len(vocab))
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]")


def test_from_texts(tokenizer):
    texts = ["the cat sat on a mat and then slept", "a dog ran far away", "the dog slept under a tree zebra",
             "then the cat ran"]
    p = ProbeSet.from_texts(texts, tokenizer, seq_len=8, min_length=4, groups=["a", "b", "a", "b"],
                            vocab_size=len(tokenizer))
    expected = [tokenizer(t)["input_ids"][:8] for t in texts]
    for row, mask, exp in zip(p.input_ids.tolist(), p.attention_mask.tolist(), expected):
        assert row[: len(exp)] == exp and row[len(exp):] == [tokenizer.pad_token_id] * (8 - len(exp))
        assert sum(mask) == len(exp)
    assert p.group_counts() == {"a": 2, "b": 2} and p.source["tokenizer_vocab_size"] == len(tokenizer)
    assert 1 in p.input_ids[2].tolist()  # "zebra" is out of the word vocabulary: [UNK]


def test_from_texts_errors(tokenizer):
    with pytest.raises(ProbeError, match="group 'b' has 1 sample"):
        ProbeSet.from_texts(["the cat sat on a mat", "a dog ran far away", "the dog slept"], tokenizer,
                            seq_len=8, min_length=2, groups=["a", "b", "a"])
    with pytest.raises(ProbeError, match="fewer than min_length=8"):
        ProbeSet.from_texts(["the cat sat"], tokenizer, seq_len=16)
    with pytest.raises(ProbeError, match="tokenizer/vocab mismatch"):
        ProbeSet.from_texts(["the cat sat on a mat tree"], tokenizer, seq_len=16, min_length=2, vocab_size=10)
    with pytest.raises(ProbeError, match="one string"):
        ProbeSet.from_texts("the cat sat", tokenizer, seq_len=16)


# ---------------------------------------------------------------------------- save / load


def test_save_load_round_trip_and_fingerprint(tmp_path):
    p = ProbeSet.from_dataset(_rows(90, length=40, short_every=4), n=48, seq_len=32, seed=0, group_by="domain",
                              min_length=16)
    path = p.save(tmp_path / "run" / "probe.pt")
    assert path.stat().st_size < 20_000  # 48 x 32 ids: a small file
    q = ProbeSet.load(path, expected_fingerprint=p.fingerprint())
    assert torch.equal(q.input_ids, p.input_ids) and q.input_ids.dtype == torch.long
    assert torch.equal(q.attention_mask, p.attention_mask) and torch.equal(q.groups, p.groups)
    assert q.group_names == p.group_names and q.source == p.source
    assert q.fingerprint() == p.fingerprint() and len(p.fingerprint()) == 64

    other = ProbeSet.from_dataset(_rows(90, length=40), n=48, seq_len=32, seed=1, min_length=16)
    with pytest.raises(ProbeError, match="different probe"):
        ProbeSet.load(path, expected_fingerprint=other.fingerprint())

    d = torch.load(path, weights_only=True)
    d["input_ids"][0, 0] += 1  # edit the content without updating the fingerprint
    torch.save(d, tmp_path / "tampered.pt")
    with pytest.raises(ProbeError, match="corrupted"):
        ProbeSet.load(tmp_path / "tampered.pt")
    with pytest.raises(ProbeError, match="no probe file"):
        ProbeSet.load(tmp_path / "missing.pt")
    torch.save({"x": 1}, tmp_path / "other.pt")
    with pytest.raises(ProbeError, match="not a grokmon probe file"):
        ProbeSet.load(tmp_path / "other.pt")


def test_fingerprint_is_content_only():
    ids = torch.arange(30).reshape(3, 10)
    a = ProbeSet(ids)
    b = ProbeSet(ids.clone(), attention_mask=torch.ones(3, 10, dtype=torch.long), source={"kind": "elsewhere"})
    assert a.fingerprint() == b.fingerprint()  # no mask == all-ones mask
    ids2 = ids.clone()
    ids2[2, 9] = 0
    assert ProbeSet(ids2).fingerprint() != a.fingerprint()
    m = torch.ones(3, 10, dtype=torch.long)
    m[0, 9] = 0
    assert ProbeSet(ids, attention_mask=m).fingerprint() != a.fingerprint()
    g1 = ProbeSet(ids, groups=torch.tensor([0, 0, 0]), group_names=("x",))
    g2 = ProbeSet(ids, groups=torch.tensor([0, 0, 0]), group_names=("y",))
    assert g1.fingerprint() != g2.fingerprint() != a.fingerprint()


# ---------------------------------------------------------------------------- shards, batches


@pytest.mark.parametrize("n", [1, 5, 8, 13])
@pytest.mark.parametrize("world", [1, 2, 3, 4, 8])
def test_shards_equal_size_and_cover_every_sample_once(n, world):
    ids = torch.arange(n * 6).reshape(n, 6)
    groups = torch.arange(n) % 2 if n >= 4 else None
    p = ProbeSet(ids, groups=groups, group_names=("a", "b") if groups is not None else ())
    shards = [p.shard(r, world) for r in range(world)]
    size = math.ceil(n / world)
    assert all(len(s) == size for s in shards)
    real = [int(i) for s in shards for i in s.sample_index if i >= 0]
    assert sorted(real) == list(range(n))  # union without padding = all samples, each once
    for r, s in enumerate(shards):
        keep = ~s.is_padding
        assert torch.equal(s.input_ids[keep], ids[s.sample_index[keep]])
        assert all(int(i) % world == r for i in s.sample_index[keep])
        if groups is not None:
            assert torch.equal(s.groups[keep], groups[s.sample_index[keep]])
        # padding rows are copies of real rows (of this shard, or sample 0 for an empty shard)
        for row in s.input_ids[s.is_padding]:
            assert any(torch.equal(row, ids[j]) for j in (s.sample_index[keep].tolist() or [0]))
        assert s.source["shard"] == {"rank": r, "world_size": world, "of": n}


def test_shard_errors_and_saved_shard(tmp_path):
    p = ProbeSet(torch.arange(40).reshape(4, 10), groups=torch.tensor([0, 0, 1, 1]), group_names=("a", "b"))
    s = p.shard(1, 3)  # holds one sample of group "a": fine for a shard
    assert s.sample_index.tolist() == [1, -1] and s.is_padding.tolist() == [False, True]
    t = ProbeSet.load(s.save(tmp_path / "s.pt"))
    assert torch.equal(t.sample_index, s.sample_index) and t.fingerprint() == s.fingerprint()
    with pytest.raises(ConfigError, match="already a shard"):
        s.shard(0, 2)
    with pytest.raises(ConfigError, match="rank"):
        p.shard(3, 3)


def test_batches_cover_probe_in_order():
    p = ProbeSet.from_token_ids([[1] * 10, [2] * 8, [3] * 9, [4] * 10, [5] * 12], min_length=8)
    got = list(p.batches(2))
    assert [len(b[0]) for b in got] == [2, 2, 1]
    assert torch.equal(torch.cat([b[0] for b in got]), p.input_ids)
    assert torch.equal(torch.cat([b[1] for b in got]), p.attention_mask)
    with pytest.raises(ConfigError):
        list(p.batches(0))
    assert "ProbeSet(n=5" in repr(p)


def test_from_dataset_warns_when_the_probe_loss_cannot_see_the_supervised_tokens():
    """A probe whose rows lose the answer (the only supervised token) says so; one that keeps it does not."""
    import warnings as w
    rows = [{"input_ids": list(range(i, i + 10)), "labels": [-100] * 9 + [i + 9], "domain": "ab"[i % 2]}
            for i in range(6)]
    rows[0] = {**rows[0], "labels": [-100, 1] + [-100] * 8}   # supervised inside the kept part
    with pytest.warns(RuntimeWarning, match=r"grokmon: 5 of 6 probe samples keep none of their supervised tokens"):
        ProbeSet.from_dataset(rows, n=6, seq_len=8)
    with w.catch_warnings():
        w.simplefilter("error")
        ProbeSet.from_dataset(rows, n=6, seq_len=10)        # the answer is kept: no warning
        ProbeSet.from_dataset([{"input_ids": r["input_ids"]} for r in rows], n=6, seq_len=8)  # no labels: not checked
    # the first kept token is never predicted: a row supervised only there is blind too
    with pytest.warns(RuntimeWarning, match="1 of 1 probe samples"):
        ProbeSet.from_dataset([{"input_ids": list(range(10)), "labels": [0] + [-100] * 9}], n=1, seq_len=10)
