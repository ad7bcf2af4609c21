#!/usr/bin/env python
# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Each C++-kernel version of ``egeunet_monai.accel`` against the reference module it replaces, forward + backward,
interleaved (``common.interleaved``): whether each kernel is worth keeping.

Shapes of one half of a split batch-8 step (4 images) on one intra-op thread, as ``SplitBatchIteration``'s workers
run them: the first bridge's channel LayerNorms and dilated depth-wise convs (128x128), the first encoder's max-pool
(256x256), the upsampling of a side head's output and of the decoder's last level, the six DiceCE terms of
``EGEUNetLoss``; and the trainer's batch augmentation (8 images, on the calling thread with all its threads, as
``prepare_batch`` runs it).

Example: ``python scripts/benchmarks/operators.py --repeats 9``
"""

from __future__ import annotations

import argparse
import copy
import statistics

from common import interleaved, machine, markdown, ratio


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--images", type=int, default=4, help="batch of each operator (one half of a batch-8 step)")
    args = p.parse_args(argv)

    import torch
    from torch import nn

    from egeunet_monai.accel import accelerate, kernels
    from egeunet_monai.losses import EGEUNetLoss
    from egeunet_monai.networks.blocks import BilinearResize, ChannelFirstLayerNorm
    from egeunet_monai.transforms import RandFlipRotateBatch

    if not kernels.load():
        raise SystemExit("the C++ CPU kernels did not build here: nothing to compare")
    print(machine())
    n, g = args.images, torch.Generator().manual_seed(0)
    target = (torch.rand(n, 1, 256, 256, generator=g) > 0.5).float()
    resize = BilinearResize()
    # name: (reference callable, input shape); the kernel version is accelerate(a copy of the reference)
    cases = {
        "channel LayerNorm, 5 ch, 128x128 (bridge 1 groups)": (ChannelFirstLayerNorm(5), [n, 5, 128, 128]),
        "channel LayerNorm, 20 ch, 128x128 (bridge 1 tail)": (ChannelFirstLayerNorm(20), [n, 20, 128, 128]),
        **{
            f"3x3 depth-wise conv, dilation {d}, 5 ch, 128x128": (nn.Conv2d(5, 5, 3, padding=d, dilation=d, groups=5), [n, 5, 128, 128])
            for d in (1, 2, 5, 7)
        },
        "2x2 max-pool, 8 ch, 256x256 (encoder 1)": (nn.MaxPool2d(2, 2), [n, 8, 256, 256]),
        "bilinear resize 32x32 -> 256x256, 1 ch (a side head's output)": (resize, [n, 1, 32, 32]),
        "bilinear resize 64x64 -> 128x128, 8 ch (decoder 1)": (BilinearResize(), [n, 8, 64, 64]),
        "EGEUNetLoss, six DiceCE terms, 256x256": (EGEUNetLoss(), [6, n, 1, 256, 256]),
    }  # fmt: skip

    def call(module, x):
        if isinstance(module, BilinearResize):
            return module(x, [256, 256] if x.shape[1] == 1 else [2 * x.shape[2], 2 * x.shape[3]])
        if isinstance(module, EGEUNetLoss):  # the six outputs (main and upsampled side heads) stacked in one tensor
            return module(list(x.unbind(0)), target)
        return module(x)

    rows = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    for name, (reference, shape) in cases.items():
        kernel = accelerate(copy.deepcopy(reference))
        assert type(kernel) is not type(reference) or any(
            type(m) is not type(r) for m, r in zip(kernel.modules(), reference.modules())
        ), f"{name}: nothing was swapped"
        x = torch.randn(*shape, generator=g)
        grad = torch.randn_like(call(reference, x))

        def run(module, x=x, grad=grad):
            for _ in range(3):
                call(module, x.detach().requires_grad_()).backward(grad)

        timings = interleaved({"reference": lambda r=reference: run(r), "kernel": lambda k=kernel: run(k)},
                              repeats=args.repeats, images=3 * n)  # fmt: skip
        wall_ref, wall_kernel = timings["reference"][0], timings["kernel"][0]
        rows.append([name, f"{1e3 * statistics.median(wall_ref):.2f}", f"{1e3 * statistics.median(wall_kernel):.2f}",
                     f"{ratio(wall_kernel, wall_ref):.2f}x", f"{ratio(timings['kernel'][1], timings['reference'][1]):.2f}x"])  # fmt: skip
    torch.set_num_threads(threads)

    image, label = torch.rand(8, 3, 256, 256, generator=g) * 255, target.repeat(2, 1, 1, 1)[:8]
    plain, fast = RandFlipRotateBatch(seed=0), accelerate(RandFlipRotateBatch(seed=0))
    timings = interleaved({"reference": lambda: [plain(image, label) for _ in range(5)],
                           "kernel": lambda: [fast(image, label) for _ in range(5)]}, repeats=args.repeats, images=40)  # fmt: skip
    rows.append([f"RandFlipRotateBatch, batch 8, 256x256 ({threads} threads)",
                 f"{1e3 * statistics.median(timings['reference'][0]):.2f}", f"{1e3 * statistics.median(timings['kernel'][0]):.2f}",
                 f"{ratio(timings['kernel'][0], timings['reference'][0]):.2f}x",
                 f"{ratio(timings['kernel'][1], timings['reference'][1]):.2f}x"])  # fmt: skip
    print(f"\nforward + backward, {args.repeats} interleaved repeats; ms per image (median); speed-up of the kernel "
          "version, median over repeats, wall clock and CPU time")
    print(markdown(["operator", "reference ms/img", "kernel ms/img", "speed-up (wall)", "speed-up (CPU)"], rows))


if __name__ == "__main__":
    main()
