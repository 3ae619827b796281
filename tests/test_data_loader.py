"""Collate, samplers and DataLoader construction: shapes, determinism, empty targets, errors from workers."""
import pytest
import torch

from data import DataError, build_dataset, build_loader, detection_collate
from tests.test_data_voc import write_voc_folder

NUM_IMAGES = 10


@pytest.fixture
def voc_root(tmp_path):
    samples = {f"{i:03d}": [("cat", (2 + i, 3, 30 + i, 40), 0), ("dog", (5, 6, 50, 44), 0)][: i % 3]
               for i in range(NUM_IMAGES)}
    held_out = {f"t{name}": objects for name, objects in samples.items()}  # the same objects, other images
    return write_voc_folder(tmp_path, samples | held_out, {"trainval": list(samples), "test": list(held_out)})


def train_set(root, seed=0):
    return build_dataset("voc", "train", 64, data_root=str(root), classes=["cat", "dog"], seed=seed)


def batches(loader, epochs=2):
    return [(images, list(targets), indices) for _ in range(epochs) for images, targets, indices in loader]


def assert_same_batches(a, b):
    assert len(a) == len(b)
    for (images_a, targets_a, indices_a), (images_b, targets_b, indices_b) in zip(a, b):
        assert torch.equal(indices_a, indices_b) and torch.equal(images_a, images_b)
        assert all(torch.equal(x, y) for x, y in zip(targets_a, targets_b))


def test_collate_stacks_images_and_keeps_targets_as_a_list():
    batch = [(torch.zeros(3, 8, 8), torch.ones(2, 5), 4), (torch.ones(3, 8, 8), torch.zeros(0, 5), 1)]
    images, targets, indices = detection_collate(batch)
    assert images.shape == (2, 3, 8, 8) and images[1].sum() == 3 * 64
    assert [t.shape for t in targets] == [(2, 5), (0, 5)]
    assert indices.dtype == torch.int64 and indices.tolist() == [4, 1]


def test_train_loader_drops_the_last_partial_batch_and_keeps_empty_images(voc_root):
    loader = build_loader(train_set(voc_root), 4, train=True, workers=0)
    epoch = list(loader)
    assert len(loader) == NUM_IMAGES // 4 == len(epoch)
    seen = torch.cat([indices for _, _, indices in epoch])
    assert len(set(seen.tolist())) == 8
    for images, targets, indices in epoch:
        assert images.shape == (4, 3, 64, 64)
        for target, index in zip(targets, indices.tolist()):
            if index % 3 == 0:  # written without objects
                assert target.shape == (0, 5)


def test_test_loader_keeps_order_and_every_image(voc_root):
    dataset = build_dataset("voc", "test", 64, data_root=str(voc_root), classes=["cat", "dog"])
    loader = build_loader(dataset, 4, train=False, workers=0)
    assert torch.cat([indices for _, _, indices in loader]).tolist() == list(range(NUM_IMAGES))


def test_same_seed_same_batches_and_epochs_differ(voc_root):
    first = batches(build_loader(train_set(voc_root), 4, train=True, workers=0, seed=3))
    second = batches(build_loader(train_set(voc_root), 4, train=True, workers=0, seed=3))
    assert_same_batches(first, second)
    epoch_0, epoch_1 = first[:2], first[2:]
    assert not torch.equal(torch.cat([b[2] for b in epoch_0]), torch.cat([b[2] for b in epoch_1]))
    other_seed = batches(build_loader(train_set(voc_root), 4, train=True, workers=0, seed=4))
    assert not torch.equal(first[0][0], other_seed[0][0])


def test_workers_give_the_same_batches_as_the_main_process(voc_root):
    in_process = batches(build_loader(train_set(voc_root), 4, train=True, workers=0, seed=1))
    loader = build_loader(train_set(voc_root), 4, train=True, workers=2, seed=1)
    assert loader.persistent_workers and loader.pin_memory == torch.cuda.is_available()
    assert_same_batches(in_process, batches(loader))


def test_set_epoch_selects_the_epoch_to_replay(voc_root):
    full = batches(build_loader(train_set(voc_root), 4, train=True, workers=0, seed=2), epochs=3)
    resumed = build_loader(train_set(voc_root), 4, train=True, workers=0, seed=2)
    resumed.sampler.set_epoch(2)
    assert_same_batches(full[4:], batches(resumed, epochs=1))


def test_a_corrupt_image_in_a_worker_is_reported_with_its_file(voc_root):
    dataset = train_set(voc_root)
    path = voc_root / "JPEGImages" / "004.jpg"
    path.write_bytes(path.read_bytes()[:200])  # truncated after the dataset was built
    loader = build_loader(dataset, 2, train=False, workers=1)
    with pytest.raises(DataError, match=r"004\.jpg: truncated JPEG"):
        list(loader)


def test_too_small_dataset_for_one_batch(voc_root):
    with pytest.raises(ValueError, match="fewer than one batch of 32"):
        build_loader(train_set(voc_root), 32, train=True, workers=0)


def test_distributed_loader_shards_the_epoch(voc_root, tmp_path):
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        loader = build_loader(train_set(voc_root), 4, train=True, workers=0, distributed=True, seed=0)
        loader.sampler.set_epoch(1)
        indices = torch.cat([i for _, _, i in loader]).tolist()
    finally:
        torch.distributed.destroy_process_group()
    assert len(indices) == 8 and len(set(indices)) == 8
    expected = torch.randperm(NUM_IMAGES, generator=torch.Generator().manual_seed(0 + 1)).tolist()[:8]
    assert indices == expected
