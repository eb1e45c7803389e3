"""Generated seq2seq tasks (Notes: 003 §9): date-format translation checked against datetime.strptime, and
reversal / copy; seeded, with train and test splits that share nothing."""

import datetime as dt

import pytest
import torch

from dlkit.data.sequence_tasks import DATE_FORMATS, WEEKDAYS, copy_task, date_task, reversal_task
from dlkit.errors import ConfigError

# strptime's own reading of each style (%y uses the POSIX pivot: 69-99 -> 19yy, 00-68 -> 20yy)
STRPTIME = {"month_day_year": "%B %d, %Y", "day_mon_year": "%d %b %Y", "dd/mm/yy": "%d/%m/%y",
            "day_month_year": "%d %B %Y", "mon_dd_year": "%b %d, %Y", "dd.mm.yyyy": "%d.%m.%Y",
            "weekday_day_month_year": "%A, %d %B %Y", "Month_day_year": "%B %d %Y"}


def test_every_date_style_has_a_strptime_reading():
    assert set(STRPTIME) == set(DATE_FORMATS)
    d = dt.date(1998, 9, 3)
    assert DATE_FORMATS["month_day_year"](d) == "september 3, 1998"
    assert DATE_FORMATS["day_mon_year"](d) == "3 Sep 1998"
    assert DATE_FORMATS["dd/mm/yy"](d) == "03/09/98"
    assert DATE_FORMATS["weekday_day_month_year"](d) == "thursday, 3 september 1998"


def test_date_targets_are_the_iso_dates_strptime_reads_from_the_sources():
    task = date_task(1500, 300, seed=3)
    used = set()
    for src, tgt in task.train + task.test:
        want = dt.date.fromisoformat(tgt)
        assert tgt == want.isoformat()
        read = {}
        for name, fmt in STRPTIME.items():
            try:
                read[name] = dt.datetime.strptime(src, fmt).date()
            except ValueError:
                pass
        assert read and all(d == want for d in read.values()), (src, tgt, read)
        used |= read.keys()
        if src.split(",")[0] in WEEKDAYS:
            assert src.split(",")[0] == WEEKDAYS[want.weekday()]
    assert used == set(DATE_FORMATS)


def test_tasks_are_deterministic_per_seed():
    assert date_task(200, 50, seed=1).train == date_task(200, 50, seed=1).train
    assert date_task(200, 50, seed=1).train != date_task(200, 50, seed=2).train
    assert reversal_task(100, 20, seed=5).test == reversal_task(100, 20, seed=5).test
    assert copy_task(100, 20, seed=5).train != copy_task(100, 20, seed=6).train


@pytest.mark.parametrize("make", [date_task, reversal_task, copy_task])
def test_train_and_test_splits_share_no_source_and_no_target(make):
    task = make(800, 200, seed=0)
    assert len(task.train) == 800 and len(task.test) == 200
    for side in (0, 1):
        train, test = {p[side] for p in task.train}, {p[side] for p in task.test}
        assert not train & test
    assert len({s for s, _ in task.train}) == 800  # no duplicate inside a split either


def test_reversal_and_copy_targets_and_alphabet():
    rev = reversal_task(300, 30, num_symbols=5, min_len=2, max_len=6, seed=0)
    assert all(t == s[::-1] and 2 <= len(s) <= 6 and set(s) <= set("abcde") for s, t in rev.train + rev.test)
    cp = copy_task(300, 30, num_symbols=5, seed=0)
    assert all(s == t for s, t in cp.train)
    assert len(rev.src_vocab) == 5 + 4  # symbols + <PAD>, <SOS>, <EOS>, <UNK>
    with pytest.raises(ConfigError, match="distinct"):
        reversal_task(100, 10, num_symbols=2, min_len=1, max_len=3)  # only 2 + 4 + 8 = 14 sequences exist


def test_encoded_tensors_wrap_targets_in_sos_eos_and_decode_back():
    task = date_task(64, 8, seed=0)
    assert (len(task.src_vocab), len(task.tgt_vocab)) == (70, 15)  # the seq2seq_* models' default sizes
    src, tgt = task.tensors("train")
    assert src.ids.shape[0] == tgt.shape[0] == 64
    assert (tgt[:, 0] == task.tgt_vocab.sos_id).all() and (tgt[:, 11] == task.tgt_vocab.eos_id).all()
    for i, (s, t) in enumerate(task.train):
        assert task.src_vocab.to_text(src.ids[i]) == s and task.tgt_vocab.to_text(tgt[i, 1:]) == t
        assert int(src.lengths[i]) == len(s) and not src.padding_mask[i, :len(s)].any()
    seen = []
    for sb, tb in task.batches("train", batch_size=16, seed=0):
        assert sb.ids.shape[1] == int(sb.lengths.max()) and tb.shape[0] == sb.ids.shape[0]
        seen += [task.src_vocab.to_text(r) for r in sb.ids]
    assert sorted(seen) == sorted(s for s, _ in task.train)
    assert torch.equal(task.tensors("test")[1][:, 0], torch.full((8,), task.tgt_vocab.sos_id))
