"""TensorLoader: epoch permutations, resuming mid-epoch, DDP sharding, variable-size fields."""

import pytest
import torch

from dlkit.data.loader import TensorLoader, to_device
from dlkit.errors import ConfigError


def test_each_epoch_is_a_permutation_that_depends_only_on_seed_and_epoch():
    x = torch.arange(50)
    loader = TensorLoader(x, batch_size=8, seed=4)
    loader.set_epoch(2)
    seen = torch.cat([b[0] for b in loader])
    assert sorted(seen.tolist()) == list(range(50)) and len(loader) == 7
    again = TensorLoader(x, batch_size=8, seed=4)
    again.set_epoch(2)
    assert torch.equal(seen, torch.cat([b[0] for b in again]))
    again.set_epoch(3)
    assert not torch.equal(seen, torch.cat([b[0] for b in again]))


def test_iter_from_resumes_mid_epoch():
    loader = TensorLoader(torch.arange(40), batch_size=6, seed=1)
    full = [b[0] for b in loader]
    rest = [b[0] for b in loader.iter_from(3)]
    assert all(torch.equal(a, b) for a, b in zip(full[3:], rest)) and len(rest) == len(full) - 3


def test_drop_last_and_unshuffled_order():
    loader = TensorLoader(torch.arange(10), batch_size=4, shuffle=False, drop_last=True)
    assert [b[0].tolist() for b in loader] == [[0, 1, 2, 3], [4, 5, 6, 7]]


@pytest.mark.parametrize("n", [48, 50])
def test_ddp_shards_union_equals_the_single_process_batches(n):
    x = torch.arange(n)
    single = [b[0] for b in TensorLoader(x, batch_size=8, seed=2)]
    ranks = [[b[0] for b in TensorLoader(x, batch_size=8, seed=2, rank=r, world_size=2)] for r in range(2)]
    for i, batch in enumerate(single):
        assert torch.equal(torch.cat([ranks[0][i], ranks[1][i]]), batch)
        if len(batch) == 8:
            assert len(ranks[0][i]) == len(ranks[1][i]) == 4


def test_transform_gets_a_reproducible_generator_per_batch():
    def jitter(x, generator=None):
        return x + torch.rand(x.shape, generator=generator)

    a = TensorLoader(torch.zeros(20, 2), batch_size=5, seed=0, transform=jitter)
    b = TensorLoader(torch.zeros(20, 2), batch_size=5, seed=0, transform=jitter)
    batches_a, batches_b = list(a), list(b.iter_from(2))
    assert torch.equal(batches_a[2][0], batches_b[0][0])
    assert not torch.equal(batches_a[0][0], batches_a[1][0])


def test_joint_transform_gets_images_and_label_maps_with_a_reproducible_generator():
    def shift(x, y, generator=None):
        k = int(torch.randint(1, 100, (1,), generator=generator))
        return x + k, y + k

    x, y = torch.zeros(8, 1, 2, 2), torch.zeros(8, 2, 2, dtype=torch.long)
    a = list(TensorLoader(x, y, batch_size=4, seed=1, joint_transform=shift))
    b = list(TensorLoader(x, y, batch_size=4, seed=1, joint_transform=shift).iter_from(1))
    assert torch.equal(a[1][0], b[0][0]) and torch.equal(a[1][0][:, 0], a[1][1].float())  # the same draw for both
    with pytest.raises(ConfigError, match="not both"):
        TensorLoader(x, y, batch_size=4, transform=lambda t, generator=None: t, joint_transform=shift)
    with pytest.raises(ConfigError, match="two fields"):
        TensorLoader(x, batch_size=4, joint_transform=shift)


def test_variable_size_items_are_batched_as_lists():
    targets = [torch.zeros(i, 4) for i in range(10)]
    loader = TensorLoader(torch.arange(10), targets, batch_size=4, shuffle=False)
    idx, t = next(iter(loader))
    assert isinstance(t, list) and [len(v) for v in t] == idx.tolist()


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ConfigError, match="same length"):
        TensorLoader(torch.zeros(3), torch.zeros(4), batch_size=2)
    with pytest.raises(ConfigError, match="multiple of the number of processes"):
        TensorLoader(torch.zeros(8), batch_size=3, world_size=2)


def test_to_device_moves_nested_batches():
    batch = (torch.zeros(2), [{"boxes": torch.ones(1, 4)}], "name")
    out = to_device(batch, "cpu")
    assert out[2] == "name" and torch.equal(out[1][0]["boxes"], torch.ones(1, 4))
