"""The fast inference paths compute what the eager network computes: in float64 to rounding (each rewrite is exact
in real arithmetic), in float32 as close to the float64 eager network as the eager float32 network itself is."""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import onnxruntime  # noqa: F401  (a test dependency: missing, this module must fail, not skip)
import pytest
import torch
import torch.nn.functional as F

from egeunet_monai.networks import EGEUNet
from egeunet_monai.networks.blocks import cpu_kernels
from egeunet_monai.networks.fast import EGEUNetInference, _DepthwiseConv, _maxpool2, optimize_for_inference
from tests.conftest import REPO_ROOT, require_cpu_kernels, require_shared_data, require_shared_reference

RELEASED_WEIGHTS = REPO_ROOT / "bundle" / "models" / "model.pt"
# Measured on Intel Xeon (AVX-512) under ATEN_CPU_CAPABILITY unset/avx2/default (and oneDNN capped at AVX2/SSE4.1),
# C++ kernels on and off, with the released weights on the inputs below.
# The float64 fast path against the float64 eager network: <= 1.6e-14 on probabilities, 6.6e-14 on logits (each
# rewrite is exact in real arithmetic; a wrong one is off by far more than 1e-10).
FLOAT64_TOL = 1e-10
# Float32 (eager, fast path, ONNX Runtime) against the float64 eager network: <= 1.3e-5 on probabilities and
# 6.0e-5 on logits (|logit| <= 22): bounds 3x that.
FLOAT32_PROB_TOL = 4e-5
FLOAT32_LOGIT_TOL = 2e-4


@pytest.fixture(scope="module")
def trained() -> EGEUNet:
    """The released weights (in the repository, always): real, trained weights, in eval mode."""
    if not RELEASED_WEIGHTS.is_file():
        pytest.fail(f"{RELEASED_WEIGHTS}: the released weights are missing from the repository", pytrace=False)
    net = EGEUNet()
    net.load_state_dict(torch.load(RELEASED_WEIGHTS, map_location="cpu", weights_only=True))
    return net.eval()


@pytest.fixture(scope="module")
def trained64(trained) -> EGEUNet:
    return copy.deepcopy(trained).double()


@pytest.fixture(scope="module")
def reference(trained64) -> Callable[[torch.Tensor], torch.Tensor]:
    """The float64 eager network's logits for a float32 batch (each batch computed once): the reference of every
    float32 path."""
    computed: dict[tuple, torch.Tensor] = {}

    def logits(x: torch.Tensor) -> torch.Tensor:
        key = (tuple(x.shape), x.numpy().tobytes())
        if key not in computed:
            with torch.no_grad():
                computed[key] = trained64(x.double())
        return computed[key]

    return logits


def _images(batch: int, height: int = 256, width: int = 256) -> torch.Tensor:
    g = torch.Generator().manual_seed(batch * 1000 + height)
    # smooth-ish images in [0, 255], like the min-max scaled photographs the bundle feeds the network
    low = torch.rand(batch, 3, height // 16, width // 16, generator=g)
    x = torch.nn.functional.interpolate(low, size=(height, width), mode="bilinear", align_corners=False)
    x = x + 0.05 * torch.rand(batch, 3, height, width, generator=g)
    x = x - x.amin(dim=(1, 2, 3), keepdim=True)
    return x / x.amax(dim=(1, 2, 3), keepdim=True) * 255


def _prob_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (torch.sigmoid(a.double()) - torch.sigmoid(b.double())).abs().max().item()


def _assert_float32_close(got: torch.Tensor, expected64: torch.Tensor) -> None:
    assert got.dtype == torch.float32 and got.shape == expected64.shape
    prob, logit = _prob_diff(got, expected64), (got.double() - expected64).abs().max().item()
    assert prob <= FLOAT32_PROB_TOL and logit <= FLOAT32_LOGIT_TOL, f"probabilities {prob:.2e}, logits {logit:.2e}"


@pytest.fixture(params=["C++ kernels", "PyTorch operators"])
def tier(request):
    """The fast path with the C++ CPU kernels (where they build; required under CI=true) and without them."""
    kernels = request.param == "C++ kernels"
    with cpu_kernels.enabled(kernels):
        if kernels:
            require_cpu_kernels()
        yield request.param


@pytest.mark.parametrize("shape", [(2, 256, 256), (1, 192, 320), (1, 64, 64)])
def test_optimize_for_inference_matches_eager(trained, trained64, reference, shape, tier):
    x = _images(*shape)
    expected = reference(x)
    with torch.no_grad():
        _assert_float32_close(optimize_for_inference(trained)(x), expected)
        got64 = optimize_for_inference(trained64)(x.double())
    assert got64.dtype == torch.float64 and (got64 - expected).abs().max().item() <= FLOAT64_TOL


def test_optimize_for_inference_matches_eager_on_real_photographs(trained, reference, tier):
    from PIL import Image

    files = sorted(require_shared_data("isic2017_train_256", "images").glob("*.jpg"))[:4]
    x = torch.stack([torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1) for f in files]).float()
    low, high = x.amin(dim=(1, 2, 3), keepdim=True), x.amax(dim=(1, 2, 3), keepdim=True)
    x = (x - low) / (high - low) * 255  # min-max scaling, as the bundle feeds the network
    with torch.no_grad():
        _assert_float32_close(optimize_for_inference(trained)(x), reference(x))


def test_optimize_for_inference_leaves_the_model_alone_and_refuses_training(trained):
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    fast = optimize_for_inference(trained)
    assert isinstance(fast, EGEUNetInference) and not fast.training
    assert all(torch.equal(v, before[k]) for k, v in trained.state_dict().items())
    with pytest.raises(RuntimeError, match="inference only"):
        fast.train()
    with pytest.raises(TypeError):
        optimize_for_inference(torch.nn.Conv2d(3, 1, 1))
    with pytest.raises(ValueError, match="divisible by 32"):
        fast(torch.rand(1, 3, 100, 96))


def test_workers_split_the_batch_and_keep_the_callers_threads(trained, reference):
    fast = optimize_for_inference(trained, workers=2)
    x = _images(5)  # 5 images: parts of 3 and 2
    threads = torch.get_num_threads()
    with torch.no_grad():
        got = fast(x)
        _assert_float32_close(got, reference(x))
        assert fast._pool is not None and fast._pool._max_workers == 2
        assert torch.get_num_threads() == threads
        # the workers compute with one intra-op thread each (else they would oversubscribe the cores)
        assert fast._pool.submit(torch.get_num_threads).result() == 1
        copied = copy.deepcopy(fast)  # a thread pool cannot be copied: the copy starts its own
        assert copied._pool is None and torch.equal(copied(x), got)
        assert fast(x[:2]).shape == (2, 1, 256, 256)  # one part: no threads needed


def _sum_rounding_bound(magnitude: torch.Tensor, unit: float, terms: int = 10) -> torch.Tensor:
    """A sum of ``terms`` products (in any order, with or without FMA) is within gamma_n = n u / (1 - n u) of the sum
    of the terms' magnitudes from the exact result (Higham, Accuracy and Stability of Numerical Algorithms, 3.1)."""
    return terms * unit / (1 - terms * unit) * magnitude


def test_fast_building_blocks_are_exact(tier):
    x = torch.randn(2, 5, 64, 96)
    assert torch.equal(_maxpool2(x), F.max_pool2d(x, 2, 2))
    float32_unit, float64_unit = 2.0**-24, 2.0**-53
    for d in (1, 2, 5, 7):
        conv = torch.nn.Conv2d(5, 5, 3, padding=d, dilation=d, groups=5)
        conv64 = copy.deepcopy(conv).double()
        with torch.no_grad():
            reference = conv64(x.double())  # itself within float64 rounding of the exact sums
            # 9 products and the bias per output
            magnitude = F.conv2d(x.double().abs(), conv64.weight.abs(), conv64.bias.abs(), padding=d, dilation=d,
                                 groups=5)
            slack = _sum_rounding_bound(magnitude, float64_unit)
            error64 = (_DepthwiseConv(conv64)(x.double()) - reference).abs()
            assert (error64 <= 2 * slack).all(), f"dilation {d}, float64: {error64.max().item():.1e}"
            error32 = (_DepthwiseConv(conv)(x).double() - reference).abs()
            assert (error32 <= _sum_rounding_bound(magnitude, float32_unit) + slack).all(), (
                f"dilation {d}, float32: {error32.max().item():.1e}"
            )


def test_onnx_export_and_runtime_match_eager(trained, reference, tmp_path):
    from monai.data import MetaTensor

    from egeunet_monai.export import export_onnx, load_onnx_predictor

    path = export_onnx(trained, tmp_path / "model.onnx", opset=17)
    predictor = load_onnx_predictor(path, threads=1)
    inputs = [_images(1), _images(3)]  # dynamic batch
    try:
        golden = torch.load(require_shared_reference("official_egeunet_golden.pt"), weights_only=False)
        inputs.append(golden["cases"][0]["input"])  # the original's reference images
    except pytest.skip.Exception:
        pass
    for x in inputs:
        # ONNX Runtime's kernels round differently (its GroupNorm, erf, GEMM blocking): as far from float64 as eager
        _assert_float32_close(predictor(x), reference(x))
    # a MetaTensor keeps its metadata through the predictor, as through the PyTorch network
    meta = MetaTensor(_images(1), meta={"filename_or_obj": "a.jpg"})
    out = predictor(meta)
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "a.jpg"
    with pytest.raises(ValueError, match="H and W are fixed"):
        predictor(torch.rand(1, 3, 128, 128))
    with pytest.raises(FileNotFoundError):
        load_onnx_predictor(tmp_path / "missing.onnx")
