"""The A/B measurements behind the speed choices (benchmarks/README.md, "What changed"), each variant
interleaved in one invocation on ConvNet-3 shapes of Fashion-MNIST (1x28x28, width 128):

    python benchmarks/speed_probes.py                # all probes, about 2 minutes on 2 cores
    python benchmarks/speed_probes.py allocator pooling

allocator      15 forwards of 640 images, in a fresh process with and without tune_allocator():
               seconds per forward, system seconds and minor page faults
pooling        2x2 average pooling, ATen's avg_pool2d vs a depthwise convolution: no grad / forward+backward /
               second order (the gradient of a weight gradient), ms per call, 128 channels
channels_last  ConvNet-3 forward+backward and no-grad forward of 64 images, NCHW vs channels-last
vmap           one SGD step of 3 ConvNet-3, a Python loop vs torch.func.vmap, batch 10 and 100
convolution    GFLOP/s of ConvNet-3's 128->128 3x3 convolution on 640 images of 16x16 (no grad, fp32)
"""
from __future__ import annotations

import copy
import json
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

SPEC_ARGS = (1, 28, 28, 10)


def timed(function, repeats: int = 10) -> float:
    """Seconds per call after two warm-up calls."""
    function()
    function()
    started = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - started) / repeats


def network(**overrides):
    from condensation.data import DataSpec
    from condensation.networks import create_network

    return create_network("convnet", DataSpec(*SPEC_ARGS), **overrides)


def allocator_worker(tuned: bool) -> None:
    from condensation.runtime import tune_allocator

    if tuned:
        tune_allocator()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    net = network().requires_grad_(False)
    x = torch.randn(640, *SPEC_ARGS[:3])
    with torch.no_grad():
        [net.embed(chunk) for chunk in x.split(256)]
        before = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        for _ in range(15):
            [net.embed(chunk) for chunk in x.split(256)]
        seconds = (time.perf_counter() - started) / 15
    after = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"tuned": tuned, "seconds_per_forward": round(seconds, 3),
                      "system_seconds": round(after.ru_stime - before.ru_stime, 2),
                      "minor_faults": after.ru_minflt - before.ru_minflt}))


def probe_allocator() -> None:
    for tuned in (False, True, False, True):
        done = subprocess.run([sys.executable, __file__, "_allocator", str(int(tuned))], capture_output=True, text=True)
        print("allocator", [line for line in done.stdout.splitlines() if line.startswith("{")][-1], flush=True)


def probe_pooling() -> None:
    def aten(x):
        return F.avg_pool2d(x, 2)

    def depthwise(x):
        return F.conv2d(x, torch.full((x.shape[1], 1, 2, 2), 0.25), stride=2, groups=x.shape[1])

    print("pooling: batch x size | variant | no grad / fwd+bwd / 2nd order, ms", flush=True)
    for batch, size in ((10, 32), (64, 32), (64, 16)):
        y = torch.randn(batch, 128, size, size)
        for name, pool in (("aten avg_pool2d", aten), ("depthwise conv", depthwise)):
            with torch.no_grad():
                no_grad = timed(lambda: pool(y))
            leaf = y.clone().requires_grad_()

            def first():
                out = pool(leaf)
                out.backward(torch.ones_like(out))

            weight = torch.randn(128, requires_grad=True)

            def second():
                (g,) = torch.autograd.grad(pool(leaf * weight[None, :, None, None]).pow(2).sum(), weight, create_graph=True)
                g.pow(2).sum().backward()

            print(f"pooling {batch} x {size}^2 | {name} | {1e3 * no_grad:.2f} / {1e3 * timed(first):.2f} / "
                  f"{1e3 * timed(second):.2f}", flush=True)


def probe_channels_last() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(64, *SPEC_ARGS[:3]), torch.full((64,), 3)
    for name, fmt in (("NCHW", torch.contiguous_format), ("channels_last", torch.channels_last)):
        net = network().to(memory_format=fmt)
        inputs = x.contiguous(memory_format=fmt)
        weights = [p for p in net.parameters() if p.ndim > 1]
        train = timed(lambda: torch.autograd.grad(F.cross_entropy(net(inputs), y), weights))
        with torch.no_grad():
            forward = timed(lambda: net(inputs))
        print(f"channels_last | {name} | fwd+bwd {1e3 * train:.1f} ms, no-grad forward {1e3 * forward:.1f} ms", flush=True)


def probe_vmap() -> None:
    from torch.func import functional_call, stack_module_state

    nets = [network() for _ in range(3)]
    params, buffers = stack_module_state(nets)
    skeleton = copy.deepcopy(nets[0]).to("meta")
    for batch in (10, 100):
        x, y = torch.randn(3, batch, *SPEC_ARGS[:3]), torch.randint(0, 10, (3, batch))

        def loop():
            for k, net in enumerate(nets):
                F.cross_entropy(net(x[k]), y[k]).backward()

        def vmapped():
            loss = torch.vmap(lambda p, b, xx, yy: F.cross_entropy(functional_call(skeleton, (p, b), (xx,)), yy))(
                params, buffers, x, y)
            loss.sum().backward()

        print(f"vmap | batch {batch} | loop {timed(loop, 5):.3f} s, vmap {timed(vmapped, 5):.3f} s", flush=True)


def probe_convolution() -> None:
    x, weight = torch.randn(640, 128, 16, 16), torch.randn(128, 128, 3, 3)
    with torch.no_grad():
        seconds = timed(lambda: F.conv2d(x, weight, padding=1), 5)
    flops = 2 * 640 * 128 * 128 * 9 * 16 * 16
    print(f"convolution | {flops / 1e9:.1f} GFLOP in {seconds:.3f} s = {flops / seconds / 1e9:.0f} GFLOP/s", flush=True)


PROBES = {"allocator": probe_allocator, "pooling": probe_pooling, "channels_last": probe_channels_last,
          "vmap": probe_vmap, "convolution": probe_convolution}


def main() -> None:
    if sys.argv[1:2] == ["_allocator"]:
        allocator_worker(bool(int(sys.argv[2])))
        return
    import os

    print(f"load average {os.getloadavg()[0]:.2f}, torch {torch.__version__}", flush=True)
    if "allocator" in (sys.argv[1:] or PROBES):
        probe_allocator()
    from condensation.runtime import tune_process

    tune_process()  # the remaining probes compare variants inside the library's usual settings
    torch.set_num_threads(2)
    for name in sys.argv[1:] or PROBES:
        if name != "allocator":
            PROBES[name]()


if __name__ == "__main__":
    main()
