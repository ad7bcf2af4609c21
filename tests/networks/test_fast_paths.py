"""The fast inference paths compute what the eager network computes (1e-5 on probabilities, as the parity tests)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from egeunet_monai.networks import EGEUNet, load_original_state_dict
from egeunet_monai.networks.blocks import cpu_kernels
from egeunet_monai.networks.fast import EGEUNetInference, _DepthwiseConv, _maxpool2, optimize_for_inference
from tests.conftest import require_shared_data, require_shared_reference

TOL = 1e-5


@pytest.fixture(scope="module")
def trained() -> EGEUNet:
    """The original training script's checkpoint (real, well-conditioned weights); random weights otherwise."""
    try:
        path = require_shared_reference("original_trained_isic2017_17ep.pth")
    except pytest.skip.Exception:
        torch.manual_seed(0)
        return EGEUNet().eval()
    return load_original_state_dict(EGEUNet(), path).eval()


def _images(batch: int, height: int = 256, width: int = 256) -> torch.Tensor:
    g = torch.Generator().manual_seed(batch * 1000 + height)
    # smooth-ish images in [0, 255], like the min-max scaled photographs the bundle feeds the network
    low = torch.rand(batch, 3, height // 16, width // 16, generator=g)
    x = torch.nn.functional.interpolate(low, size=(height, width), mode="bilinear", align_corners=False)
    x = x + 0.05 * torch.rand(batch, 3, height, width, generator=g)
    x = x - x.amin(dim=(1, 2, 3), keepdim=True)
    return x / x.amax(dim=(1, 2, 3), keepdim=True) * 255


def _prob_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (torch.sigmoid(a) - torch.sigmoid(b)).abs().max().item()


@pytest.fixture(params=["C++ kernels", "PyTorch operators"])
def tier(request):
    """The fast path with the C++ CPU kernels (where they build) and without them (their fall-back)."""
    kernels = request.param == "C++ kernels"
    if kernels and not cpu_kernels.available():
        pytest.skip("the C++ CPU kernels could not be built here (tests/networks/test_cpu_kernels.py says why)")
    previous = cpu_kernels.set_enabled(kernels)
    yield request.param
    cpu_kernels.set_enabled(previous)


@pytest.mark.parametrize("shape", [(2, 256, 256), (1, 192, 320), (1, 64, 64)])
def test_optimize_for_inference_matches_eager(trained, shape, tier):
    fast = optimize_for_inference(trained)
    x = _images(*shape)
    with torch.no_grad():
        eager = trained(x)
        got = fast(x)
    assert got.shape == eager.shape
    assert _prob_diff(got, eager) <= TOL
    assert (got - eager).abs().max().item() <= 1e-4  # logits: float32 rounding of another operation order


def test_optimize_for_inference_matches_eager_on_real_photographs(trained, tier):
    try:
        folder = require_shared_data("isic2017_train_256", "images")
    except pytest.skip.Exception:
        pytest.skip("no real photographs (../shared/data)")
    from PIL import Image

    files = sorted(folder.glob("*.jpg"))[:4]
    x = torch.stack([torch.from_numpy(np.asarray(Image.open(f).convert("RGB"))).permute(2, 0, 1) for f in files]).float()
    low, high = x.amin(dim=(1, 2, 3), keepdim=True), x.amax(dim=(1, 2, 3), keepdim=True)
    x = (x - low) / (high - low) * 255  # min-max scaling, as the bundle feeds the network
    with torch.no_grad():
        assert _prob_diff(optimize_for_inference(trained)(x), trained(x)) <= TOL


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


def test_workers_split_the_batch_and_keep_the_callers_threads(trained):
    fast = optimize_for_inference(trained, workers=2)
    x = _images(5)  # 5 images: parts of 3 and 2
    threads = torch.get_num_threads()
    with torch.no_grad():
        eager = trained(x)
        got = fast(x)
        assert _prob_diff(got, eager) <= TOL
        assert fast._pool is not None and fast._pool._max_workers == 2
        assert torch.get_num_threads() == threads
        # the workers compute with one intra-op thread each (else they would oversubscribe the cores)
        assert fast._pool.submit(torch.get_num_threads).result() == 1
        copied = copy.deepcopy(fast)  # a thread pool cannot be copied: the copy starts its own
        assert copied._pool is None and torch.equal(copied(x), got)
        assert fast(x[:2]).shape == (2, 1, 256, 256)  # one part: no threads needed


def test_fast_building_blocks_are_exact(tier):
    x = torch.randn(2, 5, 64, 96)
    assert torch.equal(_maxpool2(x), torch.nn.functional.max_pool2d(x, 2, 2))
    for d in (1, 2, 5, 7):
        conv = torch.nn.Conv2d(5, 5, 3, padding=d, dilation=d, groups=5)
        with torch.no_grad():
            assert (_DepthwiseConv(conv)(x) - conv(x)).abs().max().item() <= 1e-5


def test_onnx_export_and_runtime_match_eager(trained, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from monai.data import MetaTensor

    from egeunet_monai.export import export_onnx, load_onnx_predictor

    path = export_onnx(trained, tmp_path / "model.onnx", opset=17)
    predictor = load_onnx_predictor(path, threads=1)
    for batch in (1, 3):  # dynamic batch
        x = _images(batch)
        with torch.no_grad():
            # ONNX Runtime's kernels round differently (its GroupNorm, erf, GEMM blocking); the network amplifies
            # float32 rounding to about 1e-5 on probabilities (eager itself is that far from float64), ORT to a
            # few times that: 1e-4 here, 1e-5 on the reference inputs below.
            assert _prob_diff(predictor(x), trained(x)) <= 1e-4
    try:
        golden = torch.load(require_shared_reference("official_egeunet_golden.pt"), weights_only=False)
    except pytest.skip.Exception:
        golden = None
    if golden is not None:
        x = golden["cases"][0]["input"]
        with torch.no_grad():
            assert _prob_diff(predictor(x), trained(x)) <= TOL
    # a MetaTensor keeps its metadata through the predictor, as through the PyTorch network
    meta = MetaTensor(_images(1), meta={"filename_or_obj": "a.jpg"})
    out = predictor(meta)
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "a.jpg"
    with pytest.raises(ValueError, match="H and W are fixed"):
        predictor(torch.rand(1, 3, 128, 128))
    with pytest.raises(FileNotFoundError):
        load_onnx_predictor(tmp_path / "missing.onnx")
