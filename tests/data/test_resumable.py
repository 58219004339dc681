"""ResumableDataLoader: an order fixed by (seed, epoch), resumed mid-epoch, drawing nothing from the global generator."""

from __future__ import annotations

import pytest
import torch

from gengs_lightning.data.resumable import EpochSampler, ResumableDataLoader

DATA = torch.arange(20.0)


def loader(shuffle: bool = True, world_size: int = 1, rank: int = 0, seed: int = 3) -> ResumableDataLoader:
    return ResumableDataLoader(DATA, EpochSampler(DATA, world_size, rank, shuffle=shuffle, seed=seed), batch_size=3)


def epoch(data_loader: ResumableDataLoader) -> list[list[float]]:
    return [batch.tolist() for batch in data_loader]


def test_every_iteration_is_the_next_epoch_in_an_order_fixed_by_the_seed():
    first, again = loader(), loader()
    epochs = [epoch(first) for _ in range(3)]
    assert epochs == [epoch(again) for _ in range(3)]
    assert len({str(e) for e in epochs}) == 3  # a new order every epoch
    for batches in epochs:
        assert sorted(sum(batches, [])) == DATA.tolist() and len(batches) == 7
    assert epoch(loader(seed=4)) != epochs[0]
    assert epoch(loader(shuffle=False)) == [DATA[i : i + 3].tolist() for i in range(0, 20, 3)]


@pytest.mark.parametrize("done", [0, 2, 6, 7])
def test_a_loaded_state_continues_the_epoch_after_its_last_batch(done):
    original = loader()
    epoch(original)  # epoch 0
    expected = epoch(original) + epoch(original)  # epochs 1 and 2
    interrupted = loader()
    epoch(interrupted)
    iterator = iter(interrupted)
    for _ in range(done):
        next(iterator)
    assert interrupted.state_dict() == {"epoch": 1 if done else 0, "batches": done if done else 7}
    resumed = loader()
    resumed.load_state_dict(interrupted.state_dict())
    # an unfinished epoch 1 continues after batch `done`; a finished epoch (done 7, or epoch 0) is followed by the next
    assert (epoch(resumed) + epoch(resumed))[: 14 - done] == expected[done:]


def test_ranks_share_out_the_data_and_a_rank_resumes_its_own_share():
    shares = [epoch(loader(world_size=2, rank=rank)) for rank in (0, 1)]
    assert sorted(sum(shares[0] + shares[1], [])) == DATA.tolist()
    rank1 = loader(world_size=2, rank=1)
    rank1.load_state_dict({"epoch": 0, "batches": 2})
    assert epoch(rank1) == shares[1][2:]


def test_iterating_draws_nothing_from_the_global_generator():
    torch.manual_seed(0)
    expected = torch.rand(2)
    torch.manual_seed(0)
    epoch(loader())
    epoch(loader(shuffle=False))
    assert torch.equal(torch.rand(2), expected)


def test_lightning_epoch_counts_are_ignored():
    """After an end-of-epoch resume Lightning passes an epoch one ahead to set_epoch; the loader counts its own."""
    counted, told = loader(), loader()
    told.sampler.set_epoch(5)
    assert epoch(told) == epoch(counted)
