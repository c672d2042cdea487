#!/usr/bin/env python3
"""PyTorch reference for `plastic bench`: the same models, batch, input and optimiser (SGD,
lr 0.05, momentum 0.9, no weight decay: plastic's defaults), timed the same way (untimed
warm-up, then rounds of steps each closed by a device sync; the median round). Prints one JSON
line per case in `plastic bench`'s format, with "framework": "pytorch".

    python3 scripts/torch_bench.py --device cuda --model resnet18 --batch 64 --resolution 224 --classes 1000
    python3 scripts/torch_bench.py --device cuda --model convnet --batch 128 --resolution 32

Models: `resnet18` (torchvision's, 11.69 M parameters at 1000 classes, the same as plastic's)
and `convnet` (plastic's default: 3×3 conv 32 → ReLU → max-pool 2, 3×3 conv 64 → ReLU →
max-pool 2, fc 128 → ReLU → fc classes). fp32 throughout; PyTorch's defaults otherwise
(cuDNN may use TF32 for convolutions, as PyTorch allows by default).
"""
import argparse
import json
import statistics
import time

import torch
from torch import nn


def convnet(channels, resolution, classes):
    side = resolution // 4
    return nn.Sequential(
        nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * side * side, 128), nn.ReLU(), nn.Linear(128, classes),
    )


def resnet18(channels, resolution, classes):
    import torchvision
    model = torchvision.models.resnet18(num_classes=classes)
    if channels != 3:
        model.conv1 = nn.Conv2d(channels, 64, 7, 2, 3, bias=False)
    return model


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="resnet18", choices=["resnet18", "convnet"])
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args()
    dev = torch.device(a.device)
    torch.manual_seed(0)
    model = {"resnet18": resnet18, "convnet": convnet}[a.model](a.channels, a.resolution, a.classes).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x = torch.randn(a.batch, a.channels, a.resolution, a.resolution, device=dev)
    y = torch.arange(a.batch, device=dev) % a.classes
    loss_fn = nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(a.warmup):
        step()
    sync()
    times = []
    for _ in range(a.rounds):
        t = time.perf_counter()
        for _ in range(a.steps):
            step()
        sync()
        times.append((time.perf_counter() - t) / a.steps)
    t = statistics.median(times)
    print(json.dumps({
        "framework": "pytorch", "torch": torch.__version__, "model": a.model, "rule": "backprop",
        "device": a.device, "batch": a.batch, "input": [a.channels, a.resolution, a.resolution],
        "params": sum(q.numel() for q in model.parameters()), "step_ms": 1e3 * t,
        "images_per_second": a.batch / t,
        "peak_memory_mib": torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else None,
    }), flush=True)


if __name__ == "__main__":
    main()
