from collections import Counter

import pytest
import torch

from bigmodel.data.sampling import ResumableSampler

N, BATCH = 1003, 8  # not a multiple of the batch or of the ranks: a short last batch and padding for DDP


def _lengths(n=N):
    return torch.randint(1, 120, (n,), generator=torch.Generator().manual_seed(0)).tolist()


def _order(sampler, epoch=0):
    sampler.set_epoch(epoch)
    return [i for _, i in sampler]


def _batches(order, size=BATCH):
    return [order[k:k + size] for k in range(0, len(order), size)]


def _spread(order, lengths):
    """Mean over batches of (longest - shortest) length in the batch."""
    return sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in _batches(order)) / len(_batches(order))


def test_grouped_order_is_a_permutation_of_batches_of_similar_length_longest_first():
    lengths = _lengths()
    grouped = _order(ResumableSampler(N, seed=1, lengths=lengths, batch_size=BATCH))
    shuffled = _order(ResumableSampler(N, seed=1))
    assert sorted(grouped) == list(range(N))
    assert _spread(grouped, lengths) < _spread(shuffled, lengths) / 10  # measured: ~2 vs ~95
    first = _batches(grouped)[0]
    assert max(lengths[i] for i in first) == max(lengths)  # an out-of-memory shows at step 0
    batch_max = [max(lengths[i] for i in b) for b in _batches(grouped)]
    assert batch_max != sorted(batch_max, reverse=True)  # the batches themselves are shuffled


def test_grouped_order_is_a_function_of_seed_and_epoch():
    lengths = _lengths()

    def order(seed, epoch):
        return _order(ResumableSampler(N, seed=seed, lengths=lengths, batch_size=BATCH), epoch)

    assert order(1, 3) == order(1, 3)
    assert order(1, 3) != order(1, 4) and order(1, 3) != order(2, 3)
    assert len({tuple(order(1, e)[:BATCH]) for e in range(5)}) == 5  # not just a rotation of one order


def test_grouped_ranks_get_disjoint_equal_shares_and_step_batches_of_similar_length():
    lengths, world = _lengths(), 3
    ranks = [ResumableSampler(N, seed=1, rank=r, world_size=world, lengths=lengths, batch_size=BATCH)
             for r in range(world)]
    shares = [_order(s, epoch=2) for s in ranks]
    assert len({len(s) for s in shares}) == 1 and len(shares[0]) == len(ranks[0]) == -(-N // world)
    assert set().union(*shares) == set(range(N))
    padded = sum(len(s) for s in shares) - N  # the padding repeats the start of the order, as DistributedSampler
    assert sum(len(set(a) & set(b)) for a in shares for b in shares if a is not b) <= 2 * padded
    for step in zip(*(_batches(s) for s in shares)):  # what the ranks run together at one step
        together = [lengths[i] for b in step for i in b]
        assert max(together) - min(together) <= 30 or len(step[0]) < BATCH


def test_a_resumed_grouped_run_sees_the_remaining_batches_of_the_uninterrupted_one():
    lengths, world = _lengths(), 2
    for rank in range(world):
        full = _order(ResumableSampler(N, seed=5, rank=rank, world_size=world, lengths=lengths, batch_size=BATCH),
                      epoch=1)
        resumed = ResumableSampler(N, seed=5, rank=rank, world_size=world, lengths=lengths, batch_size=BATCH)
        resumed.resume(epoch=1, consumed=7 * BATCH)
        rest = [i for _, i in resumed]
        assert rest == full[7 * BATCH:] and _batches(rest) == _batches(full)[7:]  # the same batches, not shifted


def test_grouping_a_set_smaller_than_one_batch_or_one_mega_batch():
    for n in (5, 8, 8 * 50 + 3):
        lengths = _lengths(n)
        order = _order(ResumableSampler(n, seed=0, lengths=lengths, batch_size=BATCH))
        assert sorted(order) == list(range(n))
        assert max(lengths[i] for i in order[:BATCH]) == max(lengths)


@pytest.mark.parametrize("mega_batch", [50, 4])  # one mega-batch (the whole set sorted), or 11
def test_ddp_padding_repeats_examples_of_the_short_last_step_not_the_longest(mega_batch):
    lengths, world = _lengths(), 3  # 1003 = 41 steps of 3 x 8 + 19: one example short of 3 x 335, two padded

    def sampler(rank):
        return ResumableSampler(N, seed=1, rank=rank, world_size=world, lengths=lengths, batch_size=BATCH,
                                mega_batch=mega_batch)

    shares = [_order(sampler(r), epoch=2) for r in range(world)]
    assert len({len(s) for s in shares}) == 1 and set().union(*shares) == set(range(N))
    counts = Counter(i for s in shares for i in s)
    repeated = [i for i, c in counts.items() if c > 1]
    assert len(repeated) == world * len(shares[0]) - N == 2 and max(counts.values()) == 2
    last = [_batches(s)[-1] for s in shares]  # what the ranks run together at the last step
    assert all(sum(i in b for b in last) == 2 for i in repeated)  # both copies in the short last step
    assert counts[max(range(N), key=lengths.__getitem__)] == 1  # the longest example trains once
    if mega_batch == 50:  # the 19 shortest of the set and their repeats: no 119-token example among them
        together = [lengths[i] for b in last for i in b]
        assert max(together) - min(together) <= 30
    for rank, share in enumerate(shares):  # a run resumed before the last batch sees exactly that batch
        resumed = sampler(rank)
        resumed.resume(epoch=2, consumed=len(share) - len(last[rank]))
        assert [i for _, i in resumed] == last[rank]


def test_the_trainers_epoch_wins_over_the_one_lightning_sets():
    """Lightning's set_epoch counts processed epochs, one ahead of current_epoch after some resumes."""
    epoch = 1
    sampler = ResumableSampler(N, seed=3, current_epoch=lambda: epoch)
    sampler.set_epoch(2)
    assert [i for _, i in sampler] == _order(ResumableSampler(N, seed=3), 1)
    assert {e for e, _ in sampler} == {1}
