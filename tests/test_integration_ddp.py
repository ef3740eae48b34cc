"""DistributedDataParallel: 2 CPU processes (gloo) training with focal_cuda losses reach the same
gradients and parameters as one process on the full batch.

Two ways of normalising are checked:
- reduction="mean" on each rank's equal-sized shard: DDP averages the gradients over ranks, and the
  mean of equal-sized shard means is the global mean;
- the detection recipe: the loss is normalised by the number of positive anchors over all ranks,
  summed on the device with all_reduce (no .item(), no host sync), divided by the world size because
  DDP averages the gradients.
"""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import focal_cuda

WORLD_SIZE = 2
GLOBAL_BATCH = 24
FEATURES = 10
NUM_CLASSES = 4
STEPS = 4
LEARNING_RATE = 0.5


def make_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(FEATURES, 16), torch.nn.Tanh(), torch.nn.Linear(16, NUM_CLASSES)
    ).double()  # float64: the only difference between runs is the summation order of all_reduce


def make_global_batch(step):
    generator = torch.Generator().manual_seed(1000 + step)
    features = torch.randn(GLOBAL_BATCH, FEATURES, generator=generator, dtype=torch.float64)
    class_target = torch.randint(0, NUM_CLASSES, (GLOBAL_BATCH,), generator=generator)
    # sigmoid class-index target: background (== C) except a few positives, unevenly spread over the shards
    # (rank 0 gets 0, 1, 2, 0 positives over the steps, rank 1 gets 3, 4, 5, 6)
    shard_size = GLOBAL_BATCH // WORLD_SIZE
    positive_counts = (step % 3, 3 + step)
    is_positive = torch.cat([torch.arange(shard_size) < count for count in positive_counts])
    anchor_target = torch.where(
        is_positive, torch.randint(0, NUM_CLASSES, (GLOBAL_BATCH,), generator=generator), NUM_CLASSES
    )
    return features, class_target, anchor_target


def shard(tensor, rank, world_size):
    return tensor.chunk(world_size)[rank]


def focal_losses(model, focal_loss, features, class_target, anchor_target, normalizer):
    """Softmax focal loss with mean reduction + sigmoid focal loss normalised by the number of positives."""
    logits = model(features)
    softmax = focal_loss(logits, class_target)
    sigmoid = focal_cuda.sigmoid_focal_loss(logits, anchor_target, reduction="mean", normalizer=normalizer)
    return softmax + sigmoid


def make_focal_loss():
    return focal_cuda.FocalLoss(NUM_CLASSES, alpha=torch.tensor([0.4, 0.8, 1.2, 1.6], dtype=torch.float64))


def train(rank, world_size, result_dir, port):
    """One rank: DDP training on its shard; saves the first step's gradients and the final parameters."""
    torch.set_num_threads(1)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        model = torch.nn.parallel.DistributedDataParallel(make_model())
        focal_loss = make_focal_loss()
        optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
        first_grads = None
        for step in range(STEPS):
            features, class_target, anchor_target = (shard(t, rank, world_size) for t in make_global_batch(step))
            # normaliser = positives over all ranks, summed on the device; / world_size because DDP averages
            num_positive = (anchor_target < NUM_CLASSES).sum().to(torch.float64)
            dist.all_reduce(num_positive)
            normalizer = (num_positive / world_size).clamp(min=1.0)
            loss = focal_losses(model, focal_loss, features, class_target, anchor_target, normalizer)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if first_grads is None:
                first_grads = [p.grad.clone() for p in model.parameters()]
            optimizer.step()
        torch.save(
            {"first_grads": first_grads, "params": [p.detach().clone() for p in model.parameters()]},
            os.path.join(result_dir, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


def train_single_process():
    model = make_model()
    focal_loss = make_focal_loss()
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
    first_grads = None
    for step in range(STEPS):
        features, class_target, anchor_target = make_global_batch(step)
        normalizer = (anchor_target < NUM_CLASSES).sum().to(torch.float64).clamp(min=1.0)
        loss = focal_losses(model, focal_loss, features, class_target, anchor_target, normalizer)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if first_grads is None:
            first_grads = [p.grad.clone() for p in model.parameters()]
        optimizer.step()
    return {"first_grads": first_grads, "params": [p.detach().clone() for p in model.parameters()]}


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_positives_are_spread_unevenly_over_ranks():
    """The normaliser recipe is only tested if ranks see different numbers of positives (zero on a rank included)."""
    for step in range(STEPS):
        _, _, anchor_target = make_global_batch(step)
        per_rank = [int((shard(anchor_target, r, WORLD_SIZE) < NUM_CLASSES).sum()) for r in range(WORLD_SIZE)]
        assert per_rank[0] != per_rank[1] and sum(per_rank) > 0, per_rank


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch.distributed with gloo is not available")
def test_ddp_two_processes_equal_single_process_full_batch(tmp_path):
    mp.spawn(train, args=(WORLD_SIZE, str(tmp_path), free_port()), nprocs=WORLD_SIZE, join=True)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(WORLD_SIZE)]
    expected = train_single_process()
    # the two runs differ only in summation order: float64 leaves a few ulps
    tolerance = dict(rtol=1e-12, atol=1e-14)
    for rank, result in enumerate(ranks):
        for what in ("first_grads", "params"):
            for index, (got, want) in enumerate(zip(result[what], expected[what])):
                torch.testing.assert_close(got, want, **tolerance, msg=lambda m: f"rank {rank} {what}[{index}]: {m}")
    # training moved the parameters, so equality of params is not equality of the initial values
    initial = [p.detach() for p in make_model().parameters()]
    assert any(not torch.equal(p, q) for p, q in zip(expected["params"], initial))
