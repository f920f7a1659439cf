"""The example's training loop written as plainly as PyTorch allows: the benchmark's reference.

The same network (`DigitsNet`), data (the built-in digits, read from the same cache), batch size,
SGDM settings and iteration count as `python -m src.train`, with the batch-norm state carried by
hand, the data resident on the device, and nothing else: no logging, no checkpoints, no figures.

    python benchmarks/plain_loop.py [--device cuda] [--epochs 5] [--out DIR]
    python benchmarks/plain_loop.py --bf16 --channels-last    # as an expert writes it

As a script it is the whole-run reference (start-up, data, training, test, outputs); `train`
is the loop that `benchmarks/bench.py` times against the project's Lightning path.

`--bf16` and `--channels-last` are the two levers an expert pulls on a machine that has them:
the forward pass and the loss under `torch.autocast(dtype=torch.bfloat16)` (the backward pass
follows it), and the convolutions' weights and each batch in NHWC memory order. The batch-norm
state and the weights stay float32 tensors either way.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from src.model.network import DigitsNet  # noqa: E402


def load_digits(cache_dir: Path, per_class: tuple[int, int] = (500, 500)):
    """(train images, train labels, test images, test labels) as tensors, from the data cache."""
    from src.data.sources import synthetic

    train, test = synthetic(cache_dir, 0, *per_class)
    as_t = torch.from_numpy
    return as_t(train.images), as_t(train.labels), as_t(test.images), as_t(test.labels)


def make_network(
    images: torch.Tensor, seed: int, device: torch.device, channels_last: bool = False
) -> DigitsNet:
    torch.manual_seed(seed)
    net = DigitsNet().to(device)
    if channels_last:
        net.to(memory_format=torch.channels_last)
    with torch.no_grad():
        net.input.mean.copy_(images.double().mean(dim=0).float())  # mean(XTrain, 4)
    return net


def train(
    net: DigitsNet,
    images: torch.Tensor,
    labels: torch.Tensor,
    epochs: int,
    batch_size: int = 128,
    seed: int = 0,
    lr: float = 0.01,
    momentum: float = 0.9,
    time_after_first: bool = False,
    bf16: bool = False,
    channels_last: bool = False,
) -> tuple[float, int]:
    """The custom loop; `images` and `labels` already on the network's device. Returns (seconds,
    iterations) of the whole loop or, with `time_after_first`, of iterations 2..N (the device
    synchronised at the two ends only). `bf16`: forward and loss autocast to bfloat16;
    `channels_last`: each batch in NHWC order (the network's weights made so by `make_network`)."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum)
    generator = torch.Generator().manual_seed(seed)
    n = len(labels)
    per_epoch = n // batch_size
    start, timed = time.perf_counter(), epochs * per_epoch
    for epoch in range(epochs):
        order = torch.randperm(n, generator=generator).to(images.device)
        for i in range(per_epoch):
            idx = order[i * batch_size : (i + 1) * batch_size]
            x, y = images[idx].contiguous(memory_format=layout), labels[idx]
            with torch.autocast(images.device.type, torch.bfloat16, enabled=bf16):
                scores, state = net.forward_with_state(x, net.state)  # the state: float32
                loss = F.cross_entropy(scores, y)
            opt.zero_grad()
            loss.backward()
            net.state = state  # dlnet.State = state
            opt.step()
            if time_after_first and epoch == 0 and i == 0:
                _sync(images.device)
                start, timed = time.perf_counter(), timed - 1
    _sync(images.device)
    return time.perf_counter() - start, timed


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def accuracy(
    net: DigitsNet, images: torch.Tensor, labels: torch.Tensor, batch: int = 128, bf16: bool = False
) -> float:
    correct = 0
    with torch.autocast(images.device.type, torch.bfloat16, enabled=bf16):
        for i in range(0, len(labels), batch):
            correct += int((net(images[i : i + batch]).argmax(1) == labels[i : i + batch]).sum())
    return correct / len(labels)


def main() -> None:
    start = time.perf_counter()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--per-class", type=int, nargs=2, default=(500, 500))
    p.add_argument("--cache-dir", type=Path, default=ROOT / ".cache" / "data")
    p.add_argument("--out", type=Path, default=ROOT / "outputs" / "plain_loop")
    p.add_argument("--bf16", action="store_true", help="autocast to bfloat16 (state float32)")
    p.add_argument("--channels-last", action="store_true", help="NHWC weights and batches")
    args = p.parse_args()
    device = torch.device(args.device)
    xtr, ytr, xte, yte = (t.to(device) for t in load_digits(args.cache_dir, args.per_class))
    net = make_network(xtr, 0, device, args.channels_last)
    loop_s, iterations = train(net, xtr, ytr, args.epochs, args.batch_size, bf16=args.bf16,
                               channels_last=args.channels_last)  # fmt: skip
    acc = accuracy(net, xte, yte, bf16=args.bf16)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), args.out / "weights.pt")
    result = {"test/acc": acc, "iterations": iterations, "loop_s": loop_s,
              "total_s": time.perf_counter() - start}  # fmt: skip
    (args.out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
