#!/usr/bin/env python
# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""The network's size and the speed bound it implies on this machine: trainable parameters, multiply-adds per image
(``torch.utils.flop_counter.FlopCounterMode``), and images/s if every multiply-add ran at the rate of a large float32
matmul measured now (the network is bound by memory traffic and per-operator overhead far below that).

Example: ``python scripts/benchmarks/size.py``
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from common import machine, markdown

ORIGINAL_CONV_MACS = 72_096_256  # the original implementation's convolutions, 1x3x256x256 (../shared/reference)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--matmul", type=int, default=2048, help="size of the square matmul that measures the rate")
    args = p.parse_args(argv)

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from egeunet_monai.networks import EGEUNet

    print(machine())
    net = EGEUNet()
    x = torch.rand(1, 3, 256, 256) * 255

    with torch.no_grad():
        counter = FlopCounterMode(display=False)
        with counter:
            net.eval()(x)
    counts = counter.get_flop_counts()["Global"]
    forward_macs = counter.get_total_flops() // 2
    conv_macs = sum(v for k, v in counts.items() if "convolution" in str(k)) // 2
    n = args.matmul
    a, b = torch.rand(n, n), torch.rand(n, n)
    a @ b
    rates = []
    for _ in range(5):
        t0 = time.perf_counter()
        a @ b
        rates.append(n**3 / (time.perf_counter() - t0))
    rate = statistics.median(rates)
    params = sum(p.numel() for p in net.parameters() if p.requires_grad)
    rows = [
        ["trainable parameters", f"{params:,}", "the paper's 53,374"],
        ["multiply-adds per 1x3x256x256 image (forward)", f"{forward_macs:,}",
         f"convolutions {conv_macs:,} (the original's: {ORIGINAL_CONV_MACS:,})"],
        [f"float32 matmul {n}x{n}, {torch.get_num_threads()} threads", f"{rate / 1e9:.1f} GMAC/s", "median of 5, wall clock"],
        ["inference bound at that rate", f"{rate / forward_macs:,.0f} img/s", ""],
        ["training bound at that rate (3x the forward)", f"{rate / (3 * forward_macs):,.0f} img/s",
         f"{os.cpu_count()} cores"],
    ]  # fmt: skip
    print(markdown(["quantity", "value", "note"], rows))


if __name__ == "__main__":
    main()
