#!/usr/bin/env python
# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""The network alone, every CPU path side by side: which is the fastest exact one, and how the default path compares
with the original network run as its users run it.

Paths, at batch 1 and 8 (real images), 1 and 2 intra-op threads, in one interleaved run (``common.interleaved``):

- the original network, eager: the reference. The original code is not available here; its network is this
  project's ``EGEUNet`` (a faithful port: float64 outputs equal the original's to 1e-10, tests/networks) loaded with
  a checkpoint the original code trained (its own key names), in eval mode, plain eager, PyTorch's default threads;
- the default path: ``load_runtime(weights)`` as the tools build it (today: ONNX Runtime);
- eager, TorchScript (``torch.jit.script``) and ONNX Runtime (``load_runtime(..., runtime=...)``), each at 1 and 2
  threads.

Example: ``python scripts/benchmarks/network_paths.py --repeats 15``
"""

from __future__ import annotations

import argparse
import warnings

from common import ORIGINAL_WEIGHTS, RELEASED_WEIGHTS, interleaved, machine, markdown, rate, ratio, real_images


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=str(RELEASED_WEIGHTS))
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--batches", type=int, nargs="+", default=[8, 1])
    p.add_argument("--only", nargs="+", default=None, help="paths whose name contains one of these words only")
    args = p.parse_args(argv)

    import torch

    from egeunet_monai.inference.runtime import load_eager_network, load_runtime

    warnings.simplefilter("ignore")
    print(machine())
    default_threads = torch.get_num_threads()
    x_all = real_images(max(args.batches))
    original = load_eager_network(ORIGINAL_WEIGHTS)
    reference = f"original network, eager, {default_threads} threads (PyTorch's default)"
    reference_1 = "original network, eager, 1 thread"
    nets = {reference: (original, default_threads), reference_1: (original, 1)}
    default = load_runtime(args.weights)
    print(default.description)
    paths = {"default path: " + default.name: lambda x: default(x)}
    eager = load_eager_network(args.weights)
    scripted = torch.jit.script(load_eager_network(args.weights))
    for t in (1, 2):
        nets[f"eager, {t} thread{'s' * (t > 1)}"] = (eager, t)
        nets[f"TorchScript, {t} thread{'s' * (t > 1)}"] = (scripted, t)
        ort = load_runtime(args.weights, runtime="onnxruntime", threads=t)
        paths[f"ONNX Runtime, {t} thread{'s' * (t > 1)}"] = ort

    def torch_call(net, threads):
        def run(x):
            torch.set_num_threads(threads)  # per calling thread under OpenMP: set before each call
            with torch.inference_mode():
                return net(x)

        return run

    calls = {name: torch_call(net, t) for name, (net, t) in nets.items()} | paths
    if args.only:
        calls = {k: v for k, v in calls.items() if k in (reference, reference_1) or any(w in k for w in args.only)}
    with torch.inference_mode():  # each path against the eager network with the same weights
        expected = torch.sigmoid(eager(x_all))
        diffs = {
            name: (torch.sigmoid(fn(x_all)) - expected).abs().max().item()
            for name, fn in calls.items()
            if not name.startswith("original")
        }
    torch.set_num_threads(default_threads)
    for batch in args.batches:
        x = x_all[:batch]
        per_call = 1 if batch >= 8 else 4  # keep each timed slot near the same length
        fns = {name: (lambda fn=fn: [fn(x) for _ in range(per_call)]) for name, fn in calls.items()}
        timings = interleaved(fns, repeats=args.repeats, images=batch * per_call)
        torch.set_num_threads(default_threads)
        rows = []
        for name, (wall, cpu) in timings.items():
            rows.append([name, rate(wall), f"{ratio(wall, timings[reference][0]):.2f}x",
                         f"{ratio(wall, timings[reference_1][0]):.2f}x", rate(cpu),
                         f"{ratio(cpu, timings[reference_1][1]):.2f}x", f"{diffs[name]:.1e}" if name in diffs else ""])
        print(f"\nbatch {batch}, {args.repeats} interleaved repeats, {x.shape[0] * per_call} images each; "
              "images/s median [interquartile range]; ratios: median over repeats; max |dp|: probabilities against "
              f"the eager network with the same weights, {x_all.shape[0]} real images")
        print(markdown(["path", "wall img/s", "vs original", "vs original 1 thread", "CPU img/s",
                        "CPU vs original 1 thread", "max |dp|"], rows))

if __name__ == "__main__":
    main()
