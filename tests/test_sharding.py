import torch
from torch.utils.data import Dataset

from affectlab.lab.sharding import EvalShardSampler, MarkPadding


class Numbers(Dataset):
    def __len__(self):
        return 7

    def __getitem__(self, index):
        return {"x": torch.tensor(index)}


def test_every_sample_counted_once_across_ranks():
    data = MarkPadding(Numbers())
    seen = []
    lengths = set()
    for rank in range(3):
        sampler = EvalShardSampler(len(data), rank=rank, world_size=3)
        items = [data[i] for i in sampler]
        lengths.add(len(items))
        seen += [int(item["x"]) for item in items if item["valid"]]
    assert lengths == {3}  # equal batch counts on every rank, as DDP needs
    assert sorted(seen) == list(range(7))


def test_single_process_has_no_padding():
    sampler = EvalShardSampler(5)
    assert list(sampler) == [0, 1, 2, 3, 4]
