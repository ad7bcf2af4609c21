# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""The MONAI model zoo's checks on the bundle that ``scripts/build_bundle.py`` builds, with MONAI and published
packages only: the zoo's CI installs ``monai``, ``torch``, ``numpy`` and ``required_packages_version`` of
configs/metadata.json, then runs its ``ci/verify_bundle.py`` and ``ci/unit_tests/test_<bundle>.py``. Written from
what those check, on CPU:

- the zip unpacks into ``models/<name>/`` with configs/metadata.json, LICENSE, models/model.pt, configs/inference.json;
- ``verify_metadata`` against the zoo's schema (``bundle/schema/meta_schema.json``, a copy: nothing is downloaded);
- ``verify_net_in_out``; ``ckpt_export`` and ``torch.jit.load`` of the exported and of the shipped TorchScript;
- ``onnx_export`` with the bundle card's command (a dynamic batch axis), run by ONNX Runtime at batch 1 and 4;
- train (2 epochs) then evaluate, and inference, as ``ConfigWorkflow``s with the zoo's overrides
  (``train#trainer#max_epochs``, ``train#deterministic_transforms#<Resized>#spatial_size [32, 32]``, ...) on generated
  data, each workflow's required properties checked first; and the evaluation on 2 processes
  (configs/multi_gpu_evaluate.json, torchrun on CPU with gloo).

They run in a throw-away venv that sees this environment's site-packages through a ``.pth`` path entry: the
packages are there, but not the editable install of ``egeunet_monai`` (its finder is installed by a ``.pth`` file
of site-packages, which a path entry does not run), and the working directory is outside the checkout. The
driver first checks that ``import egeunet_monai`` fails there.

Also here: the bundle's ``scripts/`` is the package's code (same source up to the renamed imports, same outputs
for the same weights), and every JSON file is in the zoo's format (its pre-commit hooks ``pretty-format-json
--no-sort-keys --indent=4`` and ``end-of-file-fixer``)."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from bundle_helpers import REPO_ROOT, bundle_env, seed_mlflow_store

NAME = "egeunet_skin_lesion_segmentation"
PACKAGE = "egeunet_monai"
TIMEOUT_S = 1500  # about 2-3 minutes on an idle 2-core machine; a loaded one stretches that several times
# ONNX Runtime against PyTorch on the same input, logits of magnitude up to about 22: largest difference measured
# 5.4e-5 over 4 batches (1 and 4 images, 256x256, released weights, 2-core Xeon, 2026-12-01); 10x that as margin
ONNX_ATOL = 5e-4
# the bundle card's ONNX command (bundle/docs/README.md, "Commands"), from the bundle root
ONNX_EXPORT = [
    "onnx_export", "network_def", "--filepath", "models/model.onnx", "--ckpt_file", "models/model.pt",
    "--meta_file", "configs/metadata.json", "--config_file", "configs/inference.json",
    "--use_trace", "True", "--input_shape", "[1, 3, 256, 256]",
    "--converter_kwargs", "{'dynamo': False, 'opset_version': 17, 'input_names': ['image'], "
    "'output_names': ['logits'], 'dynamic_axes': {'image': {0: 'batch'}, 'logits': {0: 'batch'}}}",
]
MULTI_GPU_EVALUATE = "['configs/train.json','configs/evaluate.json','configs/multi_gpu_evaluate.json']"

# Runs in the standalone interpreter: argv = bundle root, data folder, schema and its sha256, index of Resized in
# train and in inference preprocessing, ONNX tolerance. Prints one "zoo-check: <step> ok" line per step.
DRIVER = textwrap.dedent(
    r"""
    import glob, os, sys

    bundle, data, schema, schema_sha256, train_resize, infer_resize, onnx_atol = sys.argv[1:]
    try:
        import egeunet_monai
    except ImportError:
        print("zoo-check: egeunet_monai not importable ok")
    else:
        sys.exit(f"egeunet_monai is importable here ({egeunet_monai.__file__}): this check would prove nothing")
    sys.path.insert(0, bundle)  # as the zoo's verify_bundle.py does, for the bundle's scripts/

    import numpy as np
    import onnxruntime
    import torch
    from monai.bundle import ConfigParser, ConfigWorkflow, ckpt_export, verify_metadata, verify_net_in_out

    configs = os.path.join(bundle, "configs")
    meta, infer = os.path.join(configs, "metadata.json"), os.path.join(configs, "inference.json")
    models = os.path.join(bundle, "models")

    verify_metadata(meta_file=meta, filepath=schema, hash_val=schema_sha256, hash_type="sha256")  # no download
    print("zoo-check: verify_metadata ok")
    verify_net_in_out(net_id="network_def", meta_file=meta, config_file=infer, bundle_root=bundle)
    print("zoo-check: verify_net_in_out ok")
    ckpt_export(net_id="network_def", filepath=os.path.join(models, "verify_model.ts"),
                ckpt_file=os.path.join(models, "model.pt"), meta_file=meta, config_file=infer, bundle_root=bundle)
    torch.jit.load(os.path.join(models, "verify_model.ts"))
    torch.jit.load(os.path.join(models, "model.ts"))
    print("zoo-check: ckpt_export and torch.jit.load ok")

    # the ONNX file the card's command wrote (before this driver): a dynamic batch, the network's logits
    parser = ConfigParser()
    parser.read_config(infer)
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(os.path.join(models, "model.pt"), map_location="cpu", weights_only=True))
    net.eval()
    session = onnxruntime.InferenceSession(os.path.join(models, "model.onnx"), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(0)
    for batch in (1, 4):
        x = torch.rand(batch, 3, 256, 256, generator=generator) * 255
        with torch.no_grad():
            expected = net(x).numpy()
        got = session.run(None, {"image": x.numpy()})[0]
        assert got.shape == expected.shape == (batch, 1, 256, 256), (got.shape, expected.shape)
        diff = float(np.abs(got - expected).max())
        assert diff <= float(onnx_atol), f"batch {batch}: ONNX Runtime differs from PyTorch by {diff}"
    print("zoo-check: ONNX Runtime at batch 1 and 4 ok")

    def workflow(kind, files, **override):
        flow = ConfigWorkflow(workflow_type=kind, config_file=files, meta_file=meta,
                              logging_file=os.path.join(configs, "logging.conf"), **override)
        flow.initialize()
        missing = flow.check_properties()
        assert not missing, f"{files}: missing or wrongly named properties {missing}"
        flow.run()
        flow.finalize()

    train = os.path.join(configs, "train.json")
    override = {
        "bundle_root": bundle, "dataset_dir": data, "train#trainer#max_epochs": 2, "num_workers": 0,
        f"train#deterministic_transforms#{train_resize}#spatial_size": [32, 32],
    }
    workflow("train", train, **override)
    assert os.path.isfile(os.path.join(bundle, "runs", "checkpoints", "checkpoint_epoch=2.pt"))
    print("zoo-check: train ok")
    workflow("train", [train, os.path.join(configs, "evaluate.json")], **override)
    assert os.path.isfile(os.path.join(bundle, "runs", "eval", "val_mean_dice_raw.csv"))
    print("zoo-check: evaluate ok")
    workflow("infer", infer, bundle_root=bundle, dataset_dir=data,
             **{f"preprocessing#transforms#{infer_resize}#spatial_size": [32, 32]})
    masks = glob.glob(os.path.join(bundle, "predictions", "*_mask.png"))
    assert len(masks) == len(glob.glob(os.path.join(data, "images", "*.png"))), masks
    print("zoo-check: infer ok")
    workflow("infer", infer, bundle_root=bundle, dataset_dir=data, onnx_path=os.path.join(models, "model.onnx"),
             output_dir=os.path.join(bundle, "predictions_onnx"))
    assert len(glob.glob(os.path.join(bundle, "predictions_onnx", "*_mask.png"))) == len(masks)
    print("zoo-check: infer with ONNX Runtime ok")
    """
)


def _site_packages(python: Path | str) -> list[str]:
    code = "import sysconfig; p = sysconfig.get_paths(); print(p['purelib']); print(p['platlib'])"
    out = subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True).stdout
    return list(dict.fromkeys(out.split()))


def _standalone_python(venv: Path, base: Path | str = sys.executable) -> Path:
    """A venv whose only way to the packages of ``base``'s environment is a path entry: no ``.pth`` file of their
    site-packages runs there, so the editable ``egeunet_monai`` (installed by one) is not importable."""
    subprocess.run([str(base), "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    (Path(_site_packages(python)[0]) / "base_environment.pth").write_text(
        "".join(f"{p}\n" for p in _site_packages(base)))
    return python


def _standalone_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in bundle_env().items() if k != "PYTHONPATH"}
    # the bundle's copy of the C++ sources has the package's digest: it loads the package's build from the shared
    # torch extensions cache (kernels.library_path) rather than compiling its own
    env.update(CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", **extra)
    return env


def _run(args: list, cwd: Path, env: dict, log: Path) -> str:
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT_S)
    log.write_text(proc.stdout)
    assert proc.returncode == 0, f"exit {proc.returncode}: {' '.join(map(str, args))}\n{proc.stdout[-5000:]}"
    return proc.stdout


def _index_of(transforms: list, target: str) -> int:
    return next(i for i, t in enumerate(transforms) if t.get("_target_") == target)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The built zip, unpacked as a pull request to the zoo places it (``models/<name>/``), and the standalone
    interpreter; nothing of the checkout on its path."""
    root = tmp_path_factory.mktemp("zoo")
    dist = root / "dist"
    build = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "build_bundle.py"), "--out", str(dist)],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    (archive,) = dist.glob(f"{NAME}_v*.zip")
    with zipfile.ZipFile(archive) as zf:
        assert {n.split("/")[0] for n in zf.namelist()} == {NAME}, "the zip must hold the bundle folder at its top"
        zf.extractall(root / "models")
    return SimpleNamespace(root=root, dist=dist / NAME, zip=archive, bundle=root / "models" / NAME,
                           python=_standalone_python(root / "venv"))


@pytest.mark.slow
def test_model_zoo_checks_without_the_package(zoo: SimpleNamespace, mlflow_db_template: Path):
    from egeunet_monai.data import generate_synthetic_dataset

    bundle = zoo.bundle
    for required in ("configs/metadata.json", "LICENSE", "models/model.pt", "configs/inference.json"):
        assert (bundle / required).is_file(), f"the zoo requires {required}"
    data = Path(generate_synthetic_dataset(zoo.root / "data", num_images=10, size=64))
    seed_mlflow_store(mlflow_db_template, bundle)  # an empty MLflow store with its tables: saves 10-60 s
    train = json.loads((bundle / "configs" / "train.json").read_text())
    infer = json.loads((bundle / "configs" / "inference.json").read_text())
    train_resize = _index_of(train["train"]["deterministic_transforms"], "Resized")
    infer_resize = _index_of(infer["preprocessing"]["transforms"], "Resized")
    env = _standalone_env()

    _run([zoo.python, "-m", "monai.bundle", *ONNX_EXPORT], bundle, env, zoo.root / "onnx_export.log")
    driver = zoo.root / "zoo_checks.py"
    driver.write_text(DRIVER)
    schema = REPO_ROOT / "bundle" / "schema" / "meta_schema.json"
    output = _run([zoo.python, driver, bundle, data, schema, hashlib.sha256(schema.read_bytes()).hexdigest(),
                   train_resize, infer_resize, ONNX_ATOL], zoo.root, env, zoo.root / "zoo_checks.log")
    steps = re.findall(r"^zoo-check: (.+) ok$", output, flags=re.M)
    assert steps == ["egeunet_monai not importable", "verify_metadata", "verify_net_in_out",
                     "ckpt_export and torch.jit.load", "ONNX Runtime at batch 1 and 4", "train", "evaluate", "infer",
                     "infer with ONNX Runtime"], output[-3000:]
    assert "Detected deprecated name" not in output, "metadata.json still has a deprecated key"

    # configs/multi_gpu_evaluate.json: 2 processes on CPU (gloo), each on its share of the validation images
    (bundle / "runs" / "eval").rename(bundle / "runs" / "eval_single")
    logs = zoo.root / "torchrun"
    _run([zoo.python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "--log-dir", logs,
          "--redirects", "3", "-m", "monai.bundle", "run", "evaluating", "--config_file", MULTI_GPU_EVALUATE,
          "--meta_file", "configs/metadata.json", "--logging_file", "configs/logging.conf",
          "--bundle_root", bundle, "--dataset_dir", data, "--num_workers", "0",
          "--train#deterministic_transforms#%d#spatial_size" % train_resize, "[32, 32]"],
         bundle, env, zoo.root / "multi_gpu_evaluate.log")
    for rank in (0, 1):  # each rank loaded the trained weights and evaluated
        (rank_log,) = logs.glob(f"*/attempt_0/{rank}/stdout.log")
        text = rank_log.read_text() + rank_log.with_name("stderr.log").read_text()
        assert "Restored all variables from" in text, f"rank {rank}:\n{text[-3000:]}"
    # MetricsSaver gathers both ranks' images: the same per-image table as the single-process evaluation
    single = (bundle / "runs" / "eval_single" / "val_mean_dice_raw.csv").read_text().splitlines()
    both = (bundle / "runs" / "eval" / "val_mean_dice_raw.csv").read_text().splitlines()
    assert len(both) == len(single) >= 3 and sorted(both[1:]) == sorted(single[1:]), (single, both)


def test_multi_gpu_evaluate_leaves_shared_outputs_to_rank_zero():
    """Handlers that write one file or log for the whole run are off on ranks != 0; the checkpoint loader and
    MetricsSaver (which gathers every rank's images, so must run on all) are not."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(REPO_ROOT / "configs" / name) for name in
                        ("train.json", "evaluate.json", "multi_gpu_evaluate.json")])
    handlers = parser.get("validate#handlers")
    rank_zero_only = ("StatsHandler", "OverlaySaver", "MLFlowHandler")
    kinds = []
    for handler in handlers:
        kind = handler["_target_"].split(".")[-1]
        kinds.append(kind)
        off = handler.get("_disabled_") == "@secondary_rank"
        assert off == kind.endswith(rank_zero_only), f"{kind}: _disabled_={handler.get('_disabled_')!r}"
    assert {"CheckpointLoader", "MetricsSaver"} <= set(kinds) and len(kinds) == 5, kinds
    assert parser.get("secondary_rank") == "$dist.get_rank() > 0"  # false in train.json: one process
    assert parser.get("validate#dataloader#sampler") == "@validate#sampler"


MONAILABEL_TASK = textwrap.dedent(
    r"""
    import os, sys
    import numpy as np
    from PIL import Image

    bundle, image = sys.argv[1:]
    try:
        import egeunet_monai
    except ImportError:
        pass
    else:
        sys.exit(f"egeunet_monai is importable here ({egeunet_monai.__file__})")
    from monailabel.tasks.infer.bundle import BundleInferTask

    task = BundleInferTask(bundle, conf={})  # what the monaibundle app builds for each bundle of its model/
    assert task.is_valid() and task.labels == {"skin lesion": 1} and task.dimension == 2, (task.labels, task.dimension)
    result, meta = task({"image": image, "device": "cpu"})
    mask = np.asarray(Image.open(result))
    os.remove(result)
    with Image.open(image) as photo:
        assert mask.shape == (photo.height, photo.width) and mask.dtype == np.uint8, (mask.shape, mask.dtype)
    assert set(np.unique(mask).tolist()) <= {0, 1} and mask.any(), np.unique(mask)
    assert meta["label_names"] == {"skin lesion": 1}, meta
    print("monailabel: bundle loaded and inferred")
    """
)


@pytest.mark.slow
def test_monailabel_runs_the_bundle_without_the_package(zoo: SimpleNamespace, tmp_path: Path):
    """MONAI Label 0.8.5's bundle inference task (as its monaibundle app makes it) loads the unpacked zip and
    segments an image, in a Python with the MONAI Label environment's packages but without ``egeunet_monai``.
    (``tests/integration/test_monailabel.py`` runs the whole server, with the package installed.)"""
    from egeunet_monai.data import generate_synthetic_dataset

    venv = Path(os.environ.get("MONAILABEL_VENV", REPO_ROOT / ".venv-monailabel"))
    if not (venv / "bin" / "python").is_file():
        pytest.skip(f"no MONAI Label environment at {venv} (scripts/setup_monailabel_env.sh makes it)")
    python = _standalone_python(tmp_path / "venv", venv / "bin" / "python")
    with zipfile.ZipFile(zoo.zip) as zf:  # a fresh copy: the other test trains in its own
        zf.extractall(tmp_path / "model")
    image = sorted((Path(generate_synthetic_dataset(tmp_path / "data", num_images=1, size=64)) / "images").iterdir())[0]
    script = tmp_path / "monailabel_task.py"
    script.write_text(MONAILABEL_TASK)
    output = _run([python, script, tmp_path / "model" / NAME, image], tmp_path, _standalone_env(),
                  tmp_path / "monailabel.log")
    assert "monailabel: bundle loaded and inferred" in output


def _import_lines(tree: ast.AST) -> set[int]:
    """1-based numbers of the lines that absolute imports of the package span."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
        if any(n == PACKAGE or n.startswith(PACKAGE + ".") for n in names):
            lines.update(range(node.lineno, node.end_lineno + 1))
    return lines


def test_bundle_code_is_the_package_code(zoo: SimpleNamespace):
    """Each file of the bundle's scripts/ is the package's file of the same path, a header line added and the
    package's absolute imports renamed to ``scripts``; nothing imports the package; the C++ sources are the
    package's, byte for byte. Every name the bundle's configs use is a ``scripts.`` name."""
    scripts = zoo.dist / "scripts"
    sources = sorted(scripts.rglob("*.py"))
    assert scripts / "networks" / "nets" / "egeunet.py" in sources
    for copy in sources:
        relative = copy.relative_to(scripts)
        original = (REPO_ROOT / PACKAGE / relative).read_text(encoding="utf-8").splitlines()
        header, *lines = copy.read_text(encoding="utf-8").splitlines()
        assert header.startswith(f"# Copied from {PACKAGE}/{relative.as_posix()} by scripts/build_bundle.py")
        assert len(lines) == len(original), relative
        imports = _import_lines(ast.parse("\n".join(original)))
        changed = {i + 1 for i, (a, b) in enumerate(zip(original, lines)) if a != b}
        assert changed <= imports, f"{relative}: lines {sorted(changed - imports)} differ and are no imports"
        for number in changed:
            assert lines[number - 1] == re.sub(rf"\b{PACKAGE}\b", "scripts", original[number - 1]), relative
        assert not _import_lines(ast.parse("\n".join(lines))), f"{relative} still imports {PACKAGE}"
    for cpp in sorted((REPO_ROOT / PACKAGE / "accel" / "csrc").iterdir()):
        assert (scripts / "accel" / "csrc" / cpp.name).read_bytes() == cpp.read_bytes()
    # the network the bundle carries is the reference one: its modules import nothing of the speed-up layer
    for module in (scripts / "networks").rglob("*.py"):
        tree = ast.parse(module.read_text(encoding="utf-8"))
        imported = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not any("accel" in name for name in imported), f"{module} imports {sorted(imported)}"
    for config in sorted((zoo.dist / "configs").glob("*.json")):
        text = config.read_text()
        assert not re.search(rf"\b{PACKAGE}\.", text), f"{config.name} still names {PACKAGE}"
    assert '"$import scripts"' in (zoo.dist / "configs" / "train.json").read_text()


EQUIVALENCE = textwrap.dedent(
    r"""
    import json, sys
    import torch
    bundle = sys.argv[1]
    sys.path.insert(0, bundle)
    from egeunet_monai.accel import accelerate as package_accelerate, kernels
    from egeunet_monai.losses import EGEUNetLoss as PackageLoss
    from egeunet_monai.networks.nets import EGEUNet as PackageNet
    from scripts.accel import accelerate as bundle_accelerate, kernels as bundle_kernels
    from scripts.losses import EGEUNetLoss as BundleLoss
    from scripts.networks.nets import EGEUNet as BundleNet

    assert BundleNet.__module__ == "scripts.networks.nets.egeunet", BundleNet.__module__
    kwargs = json.load(open(bundle + "/configs/train.json"))["network_def"]
    kwargs = {k: v for k, v in kwargs.items() if k != "_target_"}
    state = torch.load(bundle + "/models/model.pt", map_location="cpu", weights_only=True)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 255
    label = (torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    for accelerated in (False, True):
        nets = [cls(**kwargs) for cls in (PackageNet, BundleNet)]
        losses = [PackageLoss(), BundleLoss()]
        if accelerated:
            nets = [package_accelerate(nets[0]), bundle_accelerate(nets[1])]
            losses = [package_accelerate(losses[0]), bundle_accelerate(losses[1])]
        for net in nets:
            net.load_state_dict(state)
        with torch.no_grad():
            a, b = (net.eval()(x) for net in nets)
        assert torch.equal(a, b), f"accelerated={accelerated}: eval outputs differ by {(a - b).abs().max()}"
        outputs = [net.train()(x) for net in nets]
        losses = [loss(out, label) for loss, out in zip(losses, outputs)]
        assert torch.equal(losses[0], losses[1]), losses
        for loss in losses:
            loss.backward()
        for p, q in zip(*(net.parameters() for net in nets)):
            assert torch.equal(p.grad, q.grad), "gradients differ"
    print(f"same outputs, loss and gradients; C++ kernels: package {kernels.load()}, "
          f"bundle {bundle_kernels.load()}")
    """
)


@pytest.mark.slow
def test_bundle_network_gives_the_package_outputs(zoo: SimpleNamespace, tmp_path: Path):
    """The bundle's network and loss with the released weights: the same logits, loss and gradients as the
    package's, bit for bit, as they are and accelerated (C++ kernels on where they build: the bundle's copy
    then loads the package's build of the same sources)."""
    script = tmp_path / "equivalence.py"
    script.write_text(EQUIVALENCE)
    env = bundle_env(PYTHONPATH=str(REPO_ROOT))
    output = _run([sys.executable, script, zoo.dist], tmp_path, env, tmp_path / "equivalence.log")
    match = re.search(r"C\+\+ kernels: package (\w+), bundle (\w+)", output)
    assert match and match[1] == match[2], output[-3000:]


def _json_files() -> list[Path]:
    return sorted([*(REPO_ROOT / "configs").glob("*.json"), *(REPO_ROOT / "bundle").rglob("*.json")])


@pytest.mark.parametrize("path", _json_files(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_json_in_the_model_zoo_format(path: Path):
    text = path.read_text(encoding="utf-8")
    assert text == json.dumps(json.loads(text), indent=4) + "\n", (
        f"{path.relative_to(REPO_ROOT)}: not in the zoo's format (4-space indent, keys kept in order, ASCII, one "
        "final newline); rewrite it with json.dumps(data, indent=4) + '\\n'"
    )


def test_built_bundle_json_in_the_model_zoo_format(zoo: SimpleNamespace):
    files = sorted(zoo.dist.rglob("*.json"))
    assert {p.name for p in files} >= {"inference.json", "train.json", "evaluate.json", "metadata.json",
                                       "multi_gpu_train.json", "multi_gpu_evaluate.json"}
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert text == json.dumps(json.loads(text), indent=4) + "\n", path.relative_to(zoo.dist)


def test_metadata_follows_the_model_zoo():
    """What the zoo's ``ci/get_bundle_requirements.py`` installs from it: no package of ours, no deprecated key;
    the output described as it is (one channel of logits) with the label value MONAI Label reads."""
    meta = json.loads((REPO_ROOT / "configs" / "metadata.json").read_text())
    assert "optional_packages_version" not in meta
    required = meta["required_packages_version"]
    assert "egeunet-monai" not in required and PACKAGE not in required
    # the default inference fills holes with MONAI's FillHolesd, whose scipy.ndimage MONAI imports only optionally
    assert json.loads((REPO_ROOT / "configs" / "inference.json").read_text())["fill_holes"] is True
    assert "scipy" in required
    pred = meta["network_data_format"]["outputs"]["pred"]
    assert pred["num_channels"] == 1 and pred["value_range"] == [] and pred["dtype"] == "float32"
    # MONAI Label 0.8.5 (tasks/infer/bundle.py) makes its label map {name: int(key)} of channel_def, leaving out
    # "background": the key is the lesion's value in the thresholded mask
    assert pred["channel_def"] == {"1": "skin lesion"}
    assert meta["schema"].endswith("/meta_schema_20240725.json")


def test_card_has_the_commands():
    """The bundle card's commands section: multi-GPU training and evaluation, and the ONNX export that
    ``test_model_zoo_checks_without_the_package`` runs, word for word."""
    card = (REPO_ROOT / "bundle" / "docs" / "README.md").read_text()
    commands = card[card.index("## Commands"):]
    assert "configs/multi_gpu_train.json" in commands and "configs/multi_gpu_evaluate.json" in commands
    assert "TensorRT: not tested" in commands
    flat = re.sub(r"\\\n\s*", "", commands)  # shell line continuations joined
    for arg in ONNX_EXPORT:
        assert (f'"{arg}"' if " " in arg else arg) in flat, f"the card's onnx_export lacks {arg}"
