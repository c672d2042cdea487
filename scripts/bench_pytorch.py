#!/usr/bin/env python3
"""PyTorch reference for `plastic bench`: the same architectures, batch, input, thread count and
optimiser (SGD, lr 0.05, momentum 0.9, no weight decay: `plastic bench`'s), timed the same way
(untimed warm-up, then rounds of steps each closed by a device sync; the median round). One case
per process; prints one JSON line in `plastic bench`'s format with "framework": "pytorch".

    python3 scripts/bench_pytorch.py --model knet4 --batch 64 --resolution 32 --threads 2
    python3 scripts/bench_pytorch.py --device cuda --model resnet18 --batch 64 --resolution 224 --classes 1000

Models, built to plastic's parameter counts (both are printed: `params` here, and plastic's in
its own line): `convnet` (3×3 conv 32 → ReLU → max-pool 2, 3×3 conv 64 → ReLU → max-pool 2,
fc 128 → ReLU → fc), `knet4` (Caffe's cifar10_full without LRN, plastic's default: three 5×5
convs 32, 32, 64 with 3×3/2 pools, fc), `alexnet` (plastic's small-input variant below 100 px:
conv1 3×3/1 at 32 px, 5×5/2 from 48 px, 11×11/4 from 100 px; adaptive pool to 2×2, or 6×6 from
100 px; dropout 0.5 after fc6's and fc7's ReLU, as plastic's default `model.dropout`; no LRN), `resnet18` (torchvision's, written out; the CIFAR stem, a 3×3/1 conv without
the max-pool, below 100 px, as plastic's `stem = "auto"`), `shallownet`. With `--export DIR`
(a `plastic export --format pytorch` folder), the exported model as `python/plastic_torch.py`
rebuilds it — the ConvRNN twins of `scripts/compare.sh` — trained on the mean cross-entropy of
its loss steps, as plastic trains it.

Peak memory: on the CPU the growth of the process's peak resident set (VmHWM, reset through
/proc/self/clear_refs) over its resident set before the first step, as `plastic bench`
measures it; on a GPU the device's peak allocation. fp32 throughout (`--precision bf16` / `f16` runs
the step under autocast, f16 with a GradScaler); PyTorch's defaults otherwise (cuDNN may use TF32 convolutions).
It installs nothing and needs nothing but torch: `pip install torch`.
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn


def conv_block(c_in, c_out, k, s, p, post):
    return [nn.Conv2d(c_in, c_out, k, s, p)] + post


def convnet(channels, resolution, classes):
    side = resolution // 4
    return nn.Sequential(
        nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * side * side, 128), nn.ReLU(), nn.Linear(128, classes),
    )


def pooled(side, k, s, p):
    return (side + 2 * p - k) // s + 1


def knet4(channels, resolution, classes):
    side = pooled(pooled(pooled(resolution, 3, 2, 1), 3, 2, 1), 3, 2, 1)
    return nn.Sequential(
        nn.Conv2d(channels, 32, 5, 1, 2), nn.MaxPool2d(3, 2, 1), nn.ReLU(),
        nn.Conv2d(32, 32, 5, 1, 2), nn.ReLU(), nn.AvgPool2d(3, 2, 1, count_include_pad=False),
        nn.Conv2d(32, 64, 5, 1, 2), nn.ReLU(), nn.AvgPool2d(3, 2, 1, count_include_pad=False),
        nn.Flatten(), nn.Linear(64 * side * side, classes),
    )


def alexnet(channels, resolution, classes):
    k1, s1, p1 = (11, 4, 2) if resolution >= 100 else (5, 2, 2) if resolution >= 48 else (3, 1, 1)
    adaptive = 6 if resolution >= 100 else 2
    return nn.Sequential(
        nn.Conv2d(channels, 64, k1, s1, p1), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, 1, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, 1, 1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, 1, 1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.AdaptiveAvgPool2d(adaptive), nn.Flatten(),
        nn.Linear(256 * adaptive * adaptive, 4096), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(0.5), nn.Linear(4096, classes),
    )


class BasicBlock(nn.Module):
    """torchvision's ResNet v1 basic block: two 3×3 convs without bias, each followed by batch
    norm, the shortcut a strided 1×1 conv + batch norm where the shape changes."""

    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + shortcut)


def resnet18(channels, resolution, classes):
    """torchvision's resnet18 written out (so the script needs nothing but torch): the same
    modules, order and parameter count. Below 100 px the CIFAR stem, a 3×3/1 conv without the
    max-pool, as plastic's `stem = "auto"`; from 100 px the 7×7/2 conv and 3×3/2 max-pool."""
    if resolution < 100:
        stem = [nn.Conv2d(channels, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True)]
    else:
        stem = [nn.Conv2d(channels, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)]
    blocks, c_in = [], 64
    for c_out, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
        blocks += [BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1)]
        c_in = c_out
    model = nn.Sequential(*stem, *blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, classes))
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return model


def shallownet(channels, resolution, classes):
    k1, s1 = (11, 4) if resolution >= 48 else (5, 1)
    return nn.Sequential(
        nn.Conv2d(channels, 64, k1, s1, k1 // 2), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
        nn.Conv2d(64, 192, 5, 1, 2), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
        nn.Conv2d(192, 384, 3, 1, 1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, 1, 1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(256, classes),
    )


MODELS = {"convnet": convnet, "knet4": knet4, "alexnet": alexnet, "resnet18": resnet18, "shallownet": shallownet}


def rss_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=sorted(MODELS))
    p.add_argument("--export", help="a `plastic export --format pytorch` folder: time its model (any zoo CNN or ConvRNN, rebuilt by plastic_torch) instead of --model; the input shape and classes are the export's")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: PyTorch's default)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--precision", default="f32", choices=["f32", "bf16", "f16"], help="bf16 / f16: the step under autocast (f16 with a GradScaler), as plastic's train.precision")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
        torch.set_num_interop_threads(1)
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    torch.manual_seed(0)
    if a.export:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))
        import plastic_torch

        model = plastic_torch.load(a.export, device=dev).train()
        a.channels, a.resolution, _ = model.arch["input"]
        a.classes = model.arch["classes"]
        a.model = model.arch["model"]["kind"] if a.model is None else a.model
        forward = lambda x: model.run(x).loss_logits  # noqa: E731
    elif a.model:
        model = MODELS[a.model](a.channels, a.resolution, a.classes).to(dev)
        forward = lambda x: [model(x)]  # noqa: E731
    else:
        p.error("give --model or --export")
    params = sum(t.numel() for t in model.parameters())
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x = torch.randn(a.batch, a.channels, a.resolution, a.resolution, device=dev)
    y = torch.arange(a.batch, device=dev) % a.classes
    loss_fn = nn.CrossEntropyLoss()
    half = {"bf16": torch.bfloat16, "f16": torch.float16}.get(a.precision)
    scaler = torch.amp.GradScaler(dev.type, enabled=a.precision == "f16")

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=half or torch.float32, enabled=half is not None):
            # A ConvRNN's loss is the mean cross-entropy over its loss steps, as plastic's.
            logits = forward(x)
            loss = sum(loss_fn(z, y) for z in logits) / len(logits)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    def sync():
        if cuda:
            torch.cuda.synchronize()

    before = rss_kib("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for _ in range(max(a.warmup, 1)):
        step()
    sync()
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        hwm = rss_kib("VmHWM")
        peak = (hwm - before) / 1024 if hwm is not None and before is not None else None
    times = []
    for _ in range(max(a.rounds, 1)):
        t = time.perf_counter()
        for _ in range(max(a.steps, 1)):
            step()
        sync()
        times.append((time.perf_counter() - t) / max(a.steps, 1))
    t = statistics.median(times)
    print(json.dumps({
        "framework": "pytorch", "torch": torch.__version__, "model": a.model, "rule": "backprop",
        "device": torch.cuda.get_device_name(dev) if cuda else "cpu", "precision": a.precision,
        "threads": torch.get_num_threads(), "batch": a.batch,
        "input": [a.channels, a.resolution, a.resolution], "params": params, "step_ms": 1e3 * t,
        **({"times": model.plan["times"]} if a.export and hasattr(model, "plan") else {}),
        "images_per_second": a.batch / t, "peak_memory_mib": peak,
    }), flush=True)


if __name__ == "__main__":
    main()
