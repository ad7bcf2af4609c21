# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""The bundle's own checks, offline: ``verify_metadata`` against the shipped schema and ``verify_net_in_out``; and
configs/logging.conf, which MONAI applies by default to any bundle command whose config lives in configs/."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
from bundle_helpers import REPO_ROOT, bundle_env, check_ok, run_bundle, run_command

SCHEMA = "bundle/schema/meta_schema.json"
# any download attempt goes to a closed port and fails: "offline" is checked, not assumed
OFFLINE = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": "",
           "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "no_proxy": ""}


def test_verify_metadata_offline():
    schema = REPO_ROOT / SCHEMA
    digest = hashlib.sha256(schema.read_bytes()).hexdigest()
    result = check_ok(run_bundle("verify_metadata", "--meta_file", "configs/metadata.json", "--filepath", SCHEMA,
                                 env=bundle_env(**OFFLINE)))
    assert "metadata is verified with no error" in result.output
    assert hashlib.sha256(schema.read_bytes()).hexdigest() == digest  # used as shipped, not downloaded again


def test_verify_metadata_rejects_a_broken_metadata(tmp_path: Path):
    """The check above can fail: metadata without its required ``version`` and with a wrong type is refused."""
    meta = json.loads((REPO_ROOT / "configs" / "metadata.json").read_text())
    del meta["version"]
    meta["network_data_format"]["inputs"]["image"]["num_channels"] = "three"
    broken = tmp_path / "metadata.json"
    broken.write_text(json.dumps(meta))
    result = run_bundle("verify_metadata", "--meta_file", broken, "--filepath", SCHEMA, env=bundle_env(**OFFLINE))
    assert result.returncode != 0 and "metadata is verified with no error" not in result.output
    assert "ValidationError" in result.output or "version" in result.output


def test_verify_net_in_out():
    result = check_ok(run_bundle("verify_net_in_out", "network_def", "--meta_file", "configs/metadata.json",
                                 "--config_file", "configs/inference.json", env=bundle_env(**OFFLINE)))
    assert "data shape of network is verified with no error" in result.output


def test_logging_conf_is_applied_by_default_and_on_request(tmp_path: Path):
    """``ConfigWorkflow`` (what ``monai.bundle run`` builds) applies ``<config folder>/logging.conf`` with no
    ``--logging_file``: log records then carry the logger name, as the file's format says."""
    fmt = next(line.split("=", 1)[1] for line in (REPO_ROOT / "configs" / "logging.conf").read_text().splitlines()
               if line.startswith("format="))
    assert "%(name)s" in fmt
    probe = (
        "import logging, sys\n"
        "from monai.bundle import ConfigWorkflow\n"
        "ConfigWorkflow(config_file=sys.argv[1], workflow_type=None, logging_file={arg})\n"
        "logging.getLogger('egeunet_probe').info('probe message')\n"
    )
    default = check_ok(run_command([sys.executable, "-c", probe.format(arg="None"), "configs/inference.json"]))
    assert "Setting logging properties based on config: configs/logging.conf" in default.output
    assert " - egeunet_probe - INFO - probe message" in default.output
    explicit = check_ok(run_command([sys.executable, "-c", probe.format(arg="'configs/logging.conf'"),
                                     "configs/train.json"]))
    assert " - egeunet_probe - INFO - probe message" in explicit.output
    # without it (logging_file=False) the root logger has no handler and INFO records are not printed
    off = check_ok(run_command([sys.executable, "-c", probe.format(arg="False"), "configs/inference.json"]))
    assert "probe message" not in off.output


def _train_parser(**overrides):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(REPO_ROOT / "configs" / "train.json"))
    parser.update(overrides)
    return parser


def test_loader_workers_only_where_they_have_work():
    """With the batch augmentation on a CPU the loader only collates cached tensors: worker processes would take
    CPU from the training step (measured 24.1 vs 26.7 images/s on 2 cores), so ``loader_workers: "auto"`` runs the
    loaders in the main process; per-sample augmentation, or a GPU, keeps ``num_workers`` worker processes. The cache
    fill uses ``num_workers`` threads either way; ``--loader_workers N`` sets the number, anything else is refused."""
    cpu = _train_parser(device="cpu", num_workers=3)
    assert cpu["loader_workers"] == "auto"
    assert cpu.get_parsed_content("train#dataloader#num_workers") == 0
    assert cpu.get_parsed_content("validate#dataloader#num_workers") == 0
    assert cpu.get_parsed_content("train#dataset#num_workers") == 3
    per_sample = _train_parser(device="cpu", num_workers=3, augment_on_device="false")
    assert per_sample.get_parsed_content("train#dataloader#num_workers") == 3
    assert per_sample.get_parsed_content("train#dataloader#persistent_workers") is True
    assert _train_parser(device="cuda:0", num_workers=3).get_parsed_content("train#dataloader#num_workers") == 3
    explicit = _train_parser(device="cpu", loader_workers=2)
    assert explicit.get_parsed_content("validate#dataloader#num_workers") == 2
    with pytest.raises(RuntimeError) as failure:
        _train_parser(loader_workers="two").get_parsed_content("train#dataloader#num_workers")
    assert "--loader_workers must be a whole number >= 0 or 'auto', got 'two'" in str(failure.value.__cause__)


def test_max_epochs_auto_is_short_on_the_synthetic_data_only():
    """``max_epochs: "auto"``: the 12-epoch quick start on the synthetic default, the paper's 300 epochs on any
    other data (here MONAI Label's way of passing a datalist: ``train#dataset#data``); a number always wins."""
    from egeunet_monai.engines import training_epochs

    assert _train_parser()["max_epochs"] == "auto"
    assert training_epochs("auto", on_synthetic_data=True) == 12
    assert training_epochs("auto", on_synthetic_data=False) == 300
    assert training_epochs(5, on_synthetic_data=True) == 5
    item = {"image": str(REPO_ROOT / "elsewhere" / "a.png"), "label": str(REPO_ROOT / "elsewhere" / "a_mask.png")}
    assert _train_parser(**{"train#dataset#data": [item]}).get_parsed_content("on_synthetic_data") is False
    for bad in (0, "ten", True):
        with pytest.raises(ValueError, match="--max_epochs must be a positive whole number or 'auto'"):
            training_epochs(bad, on_synthetic_data=False)


def test_augment_on_device_switches_between_the_two_augmentation_paths():
    """``augment_on_device`` (the default, on any device; also as the string "true" fire passes) moves the flips and
    rotation from the loader's per-sample transforms to the trainer's prepare_batch, with the same probabilities;
    ``false`` keeps them in the loader. A misspelt value is refused, naming the option; per-sample transforms the
    batch augmentation does not reproduce are refused too, saying what differs and what to pass."""
    from monai.transforms import RandFlipd, RandRotated

    from egeunet_monai.engines import PrepareBatchAugmented

    def random_transforms(parser):
        return [t for t in parser.get_parsed_content("train#preprocessing").transforms if isinstance(t, (RandFlipd, RandRotated))]

    # no GPU needed to parse
    assert isinstance(_train_parser(device="cuda:0").get_parsed_content("train#prepare_batch"), PrepareBatchAugmented)
    # MONAI Label's train task passes the device as a string
    for on in (_train_parser(augment_on_device="true", flip_prob=0.25), _train_parser(flip_prob=0.25, device="cpu")):
        prepare = on.get_parsed_content("train#prepare_batch")
        assert isinstance(prepare, PrepareBatchAugmented) and random_transforms(on) == []
        assert (prepare.augmentation.flip_prob, prepare.augmentation.rotate_prob) == (0.25, 0.5)
        assert prepare.augmentation.rotate_range == on.get_parsed_content("rotate_range")
    edited = _train_parser(**{"train#random_transforms#2#prob": 0.1})  # edited without turning the batched path off
    with pytest.raises(RuntimeError) as failure:
        edited.get_parsed_content("train#prepare_batch")
    message = str(failure.value.__cause__)
    assert "RandRotated(prob=0.1) but rotate_prob=0.5" in message and "--augment_on_device false" in message
    edited["augment_on_device"] = "false"
    assert not isinstance(edited.get_parsed_content("train#prepare_batch"), PrepareBatchAugmented)
    for parser in (_train_parser(augment_on_device="false"), _train_parser(augment_on_device=False, device="cpu")):
        assert not isinstance(parser.get_parsed_content("train#prepare_batch"), PrepareBatchAugmented)
        assert [type(t).__name__ for t in random_transforms(parser)] == ["RandFlipd", "RandFlipd", "RandRotated"]
    with pytest.raises(RuntimeError) as failure:  # MONAI's "Failed to evaluate" error, raised from ours
        _train_parser(augment_on_device="ture").get_parsed_content("train#prepare_batch")
    assert "--augment_on_device must be true or false, got 'ture'" in str(failure.value.__cause__)
    # each yes/no option has one id, read once where it is used; the evaluator shares the trainer's amp
    assert _train_parser(amp="false").get_parsed_content("train#trainer#amp") is False
    assert _train_parser(amp="1").get_parsed_content("validate#evaluator#amp") is True
    assert _train_parser(compile="TRUE").get_parsed_content("train#trainer#compile") is True


def test_one_id_per_option_and_training_is_run():
    """No second id holds a parsed copy of a yes/no option; ``training`` is ``run`` (both entry points run the
    same steps)."""
    parser = _train_parser()
    config = parser.get()
    for option in ("amp", "compile", "augment_on_device", "resume", "accelerate"):
        assert option in config
    for duplicate in ("amp_enabled", "compile_enabled", "augmenting_on_device", "resuming"):
        assert duplicate not in config
    raw = json.loads((REPO_ROOT / "configs" / "train.json").read_text())
    assert raw["training"] == "%run"
    parser.parse()  # resolves the macro
    assert parser["training"] == parser["run"]
    assert _train_parser(resume="0").get_parsed_content("resume_from") == ""  # read by resume_checkpoint alone
    with pytest.raises(RuntimeError) as failure:
        _train_parser(resume="ture").get_parsed_content("resume_from")
    assert "--resume must be true or false, got 'ture'" in str(failure.value.__cause__)


def test_intensity_transforms_run_on_both_augmentation_paths_and_end_min_max_scaled():
    """``intensity_prob`` (0: off, the default) turns on per-channel gain and offset and a gamma, per sample in the
    loader on both augmentation paths and before the spatial ones; they end with the per-image min-max scaling to
    [0, 255] that inference applies, so a global gain or offset (which inference would undo) is no augmentation."""
    import torch
    from monai.transforms import Compose, RandAdjustContrastd, RandFlipd, RandScaleIntensityd

    image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0)) * 200 + 20
    for augment_on_device in ("true", "false"):
        parser = _train_parser(intensity_prob=1.0, augment_on_device=augment_on_device)
        kinds = [type(t) for t in parser.get_parsed_content("train#preprocessing").transforms]
        assert kinds.count(RandScaleIntensityd) == 1 and RandAdjustContrastd in kinds
        if augment_on_device == "false":  # colour before the flips, so a rotation's zero padding stays zero
            assert kinds.index(RandAdjustContrastd) < kinds.index(RandFlipd)
    colour = Compose(_train_parser(intensity_prob=1.0).get_parsed_content("train#intensity_transforms"))
    colour.set_random_state(seed=0)
    out = torch.as_tensor(colour({"image": image.clone()})["image"])
    assert float(out.min()) == 0.0 and float(out.max()) == 255.0
    # the channels were changed differently: their means no longer keep the input's ratios
    assert not torch.allclose(out.mean((1, 2)) / out.mean(), image.mean((1, 2)) / image.mean(), rtol=1e-3)
    off = Compose(_train_parser().get_parsed_content("train#intensity_transforms"))
    scaled = (image - image.min()) / (image.max() - image.min()) * 255
    torch.testing.assert_close(torch.as_tensor(off({"image": image.clone()})["image"]), scaled, rtol=0, atol=1e-4)


def test_one_accelerate_option_switches_every_speed_up_and_the_network_stays_the_reference(tmp_path: Path):
    """``accelerate`` (one id) gives the C++-kernel versions of the network's modules, the loss and the batch
    augmentation, and the batch split; ``--accelerate false`` the reference ones and the trainer's own iteration.
    ``network_def`` builds the reference EGEUNet (what inference, export and the bundle's checks build)."""
    import torch

    from egeunet_monai.accel import is_accelerated, kernels
    from egeunet_monai.accel.split import SplitBatchIteration

    if not kernels.load():
        pytest.skip("the C++ CPU kernels could not be built here")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        for value, expected in ((True, True), ("false", False)):
            parser = _train_parser(accelerate=value, dataset_dir="", bundle_root=str(tmp_path))
            assert is_accelerated(parser.get_parsed_content("network")) is expected
            assert is_accelerated(parser.get_parsed_content("loss")) is expected
            assert is_accelerated(parser.get_parsed_content("train#prepare_batch").augmentation) is expected
            iteration = parser.get_parsed_content("train#iteration")
            assert isinstance(iteration, SplitBatchIteration) if expected else iteration is None
            # accelerate swaps modules inside the network in place: the network is still the reference class
            assert type(parser.get_parsed_content("network")).__name__ == "EGEUNet"
        assert parser["network_def"]["_target_"] == "egeunet_monai.networks.nets.EGEUNet"
        # evaluation scores the reference network
        from monai.bundle import ConfigParser

        evaluate = ConfigParser()
        evaluate.read_config([str(REPO_ROOT / "configs" / "train.json"), str(REPO_ROOT / "configs" / "evaluate.json")])
        assert evaluate["accelerate"] is False
    finally:
        torch.set_num_threads(threads)


def test_intra_op_threads_defaults_to_pytorchs_and_is_checked():
    import torch

    from egeunet_monai.engines import set_intra_op_threads

    threads = torch.get_num_threads()
    try:
        assert set_intra_op_threads(None) == threads  # PyTorch's default, untouched
        assert set_intra_op_threads(1) == 1 and torch.get_num_threads() == 1
        for bad in (0, -2, "two", True):
            with pytest.raises(ValueError, match="--intra_op_threads must be a whole number >= 1 or null"):
                set_intra_op_threads(bad)
    finally:
        torch.set_num_threads(threads)


def _disc_on_skin(centre_row: float, centre_col: float, radius: float):
    """A dark disc (the lesion, mask 1) on a bright skin, 96x96: ``(image, mask)``, channels first."""
    import torch

    rows, cols = torch.meshgrid(torch.arange(96.0), torch.arange(96.0), indexing="ij")
    mask = (((rows - centre_row) ** 2 + (cols - centre_col) ** 2) < radius**2).float()[None]
    return (200 - 150 * mask).repeat(3, 1, 1), mask


def _zoomed(parser, image, mask):
    """``train#scale_transforms`` of ``parser`` applied to ``(image, mask)``: ``(image, mask)`` as tensors."""
    import torch
    from monai.transforms import Compose

    out = Compose(parser.get_parsed_content("train#scale_transforms"))({"image": image.clone(), "label": mask.clone()})
    return torch.as_tensor(out["image"]), torch.as_tensor(out["label"])


def _mask_pixels_off_the_image_lesion(image, mask) -> float:
    """Pixels where the mask and the image's dark lesion disagree; the zero border of a zoom-out is neither skin nor
    lesion."""
    lesion_in_image = (image[0] < 125) & (image[0] > 0)
    return float((lesion_in_image != (mask[0] > 0)).sum())


def test_zoom_runs_on_both_augmentation_paths_and_keeps_the_mask_binary_and_on_the_lesion():
    """``zoom_prob`` (0: off, the default) turns on MONAI's ``RandZoomd`` by a factor in ``zoom_range``, per sample
    in the loader on both augmentation paths, after the colour and before the flips and rotation. Image and mask
    keep their size and are zoomed alike: the mask stays 0/1, lies on the image's lesion, and the border a zoom-out
    adds is background (zeros), not a repeated edge that would extend a lesion touching it."""
    import torch
    from monai.transforms import RandAdjustContrastd, RandFlipd, RandZoomd

    for augment_on_device in ("true", "false"):
        parser = _train_parser(zoom_prob=1.0, augment_on_device=augment_on_device)
        kinds = [type(t) for t in parser.get_parsed_content("train#preprocessing").transforms]
        assert kinds.count(RandZoomd) == 1 and kinds.index(RandAdjustContrastd) < kinds.index(RandZoomd)
        if augment_on_device == "false":
            assert kinds.index(RandZoomd) < kinds.index(RandFlipd)
    image, mask = _disc_on_skin(40, 0, 30)  # touches the left border
    for zoom in (0.8, 1.25):
        parser = _train_parser(zoom_prob=1.0, zoom_range=[zoom, zoom])
        assert parser.get_parsed_content("train#tracked_params#zoom_range") == [zoom, zoom]
        zoomed, label = _zoomed(parser, image, mask)
        assert zoomed.shape == image.shape and label.shape == mask.shape
        assert set(label.unique().tolist()) == {0.0, 1.0}
        area = float(label.sum())
        assert not torch.equal(label, mask)
        assert _mask_pixels_off_the_image_lesion(zoomed, label) <= 0.02 * area, f"mask off the lesion at zoom {zoom}"
        if zoom < 1:  # the whole lesion, smaller, and a border of zeros where it touched the edge
            assert area == pytest.approx(float(mask.sum()) * zoom**2, rel=0.05)
            border = (96 - round(96 * zoom)) // 2
            assert float(zoomed[..., :border].abs().sum()) == 0.0
            assert float(label[..., :border].sum()) == 0.0, "a lesion pixel was invented in the padded border"
    assert torch.equal(_zoomed(_train_parser(), image, mask)[1], mask)


def test_zoom_range_of_two_sequences_zooms_each_axis_by_its_own_factor():
    """``--zoom_range "[[rows_min, cols_min], [rows_max, cols_max]]"`` (RandZoomd's sequence form, the per-axis
    recipe of docs/recipes.md) draws one factor per axis, rows first as the arrays are H x W: a range pinned to 0.8
    on the rows and 1.25 on the columns turns a centred disc into an ellipse 0.8x as tall and 1.25x as wide, image
    and mask alike; the same ranges swapped give the transposed ellipse."""
    import torch

    image, mask = _disc_on_skin(47.5, 47.5, 20)

    def extent(m):  # (height, width) of the mask's bounding box
        r, c = torch.nonzero(m[0] > 0, as_tuple=True)
        return float(r.max() - r.min() + 1), float(c.max() - c.min() + 1)

    height, width = extent(mask)
    for factors in ((0.8, 1.25), (1.25, 0.8)):
        parser = _train_parser(zoom_prob=1.0, zoom_range=[list(factors), list(factors)])
        zoomed, label = _zoomed(parser, image, mask)
        assert label.shape == mask.shape and set(label.unique().tolist()) == {0.0, 1.0}
        h, w = extent(label)
        assert h == pytest.approx(height * factors[0], abs=2) and w == pytest.approx(width * factors[1], abs=2), factors
        assert _mask_pixels_off_the_image_lesion(zoomed, label) <= 0.02 * float(label.sum()), factors


def _tiny_train_parser(tmp_path: Path, **overrides):
    from egeunet_monai.data import generate_synthetic_dataset

    data = generate_synthetic_dataset(tmp_path / "data", num_images=6, size=64)
    return _train_parser(bundle_root=str(tmp_path / "bundle"), dataset_dir=str(data), image_size=[64, 64],
                         num_workers=0, batch_size=2, device="cpu", **overrides)


def test_large_lesion_repeats_lengthen_the_training_list_only(tmp_path: Path):
    """``--large_lesion_repeats 3``: each training image whose mask's lesion share is above ``large_lesion_share``
    is listed three times in the trained dataset; the split file, the validation list and ``train_images`` are those
    of the default (1, off), ``train_samples`` counts the longer list, and each image is cached once."""
    import json

    from egeunet_monai.data import lesion_share

    off = _tiny_train_parser(tmp_path)
    assert off["large_lesion_repeats"] == 1
    training = off.get_parsed_content("datalists")["training"]
    assert off.get_parsed_content("train#dataset#data") == training
    split_file = tmp_path / "bundle" / "runs" / "datalist_split.json"
    split = split_file.read_text()
    shares = sorted(lesion_share(d["label"]) for d in training)
    threshold = (shares[1] + shares[2]) / 2  # between two shares: the synthetic lesions' sizes vary
    large = sum(s > threshold for s in shares)
    assert 0 < large < len(training)

    on = _tiny_train_parser(tmp_path, large_lesion_repeats=3, large_lesion_share=threshold)
    data = on.get_parsed_content("train#dataset#data")
    assert len(data) == len(training) + 2 * large
    counts = {d["id"]: sum(e["id"] == d["id"] for e in data) for d in training}
    assert all(counts[d["id"]] == (3 if lesion_share(d["label"]) > threshold else 1) for d in training)
    assert on.get_parsed_content("validate#dataset#data") == off.get_parsed_content("validate#dataset#data")
    assert split_file.read_text() == split and len(json.loads(split)["training"]) == len(training)
    tracked = on.get_parsed_content("train#tracked_params")
    assert (tracked["train_images"], tracked["train_samples"]) == (len(training), len(data))
    assert (tracked["large_lesion_repeats"], tracked["large_lesion_share"]) == (3, threshold)
    # an image listed three times is cached once (CacheDataset's hash_as_key) and served at each of its indices
    dataset = on.get_parsed_content("train#dataset")
    assert (len(dataset), dataset.cache_num) == (len(data), len(training))
    assert all(dataset[i]["image"].shape == dataset[0]["image"].shape for i in range(len(dataset)))
    assert off.get_parsed_content("train#dataset").cache_num == len(training)


def test_ema_off_by_default_attaches_nothing(tmp_path: Path):
    """``ema_momentum`` 0 (the default): no EMA handler, the evaluator and the best-model saver use the network, and
    the training checkpoint has no ``ema_model``."""
    from ignite.handlers import EMAHandler

    parser = _tiny_train_parser(tmp_path)
    assert parser["ema_momentum"] == 0 and parser.get_parsed_content("ema") is None
    network = parser.get_parsed_content("network")
    assert not any(isinstance(h, EMAHandler) for h in parser.get_parsed_content("train#trainer_handlers"))
    assert parser.get_parsed_content("validate#evaluator").network is network
    assert parser.get_parsed_content("validate#best_model_saver").key_metric_checkpoint.to_save["model"] is network
    assert sorted(parser.get_parsed_content("train#checkpoint_state")) == [
        "best_model_tracker", "lr_scheduler", "model", "optimizer", "tracking", "trainer", "validation_best"]


def test_ema_is_what_the_evaluator_scores_the_saver_saves_and_the_checkpoint_resumes(tmp_path: Path):
    """``ema_momentum`` > 0: Ignite's ``EMAHandler`` on the trained network (the very parameters the optimizer
    steps, accelerated modules included) is attached to the trainer; the per-epoch evaluator runs its EMA model, the
    best-model saver writes it as ``model`` (the network's keys: a plain EGEUNet loads it), the training checkpoint
    holds it as ``ema_model``, and it is tracked. evaluate.json scores the network its CheckpointLoader fills."""
    import torch
    from ignite.handlers import EMAHandler
    from monai.bundle import ConfigParser

    from egeunet_monai.networks.nets import EGEUNet

    parser = _tiny_train_parser(tmp_path, ema_momentum=0.25)
    ema = parser.get_parsed_content("ema")
    network = parser.get_parsed_content("network")
    assert isinstance(ema, EMAHandler) and ema.momentum == 0.25 and ema.model is network
    stepped = {id(p) for group in parser.get_parsed_content("optimizer").param_groups for p in group["params"]}
    assert {id(p) for p in ema.model.parameters()} == stepped
    assert ema in parser.get_parsed_content("train#trainer_handlers")
    evaluator = parser.get_parsed_content("validate#evaluator")
    assert evaluator.network is ema.ema_model
    assert parser.get_parsed_content("validate#best_model_saver").key_metric_checkpoint.to_save["model"] is ema.ema_model
    assert parser.get_parsed_content("train#checkpoint_state")["ema_model"] is ema.ema_model
    assert parser.get_parsed_content("train#tracked_params#ema_momentum") == 0.25
    plain = EGEUNet(in_channels=3, out_channels=1, channels=[8, 16, 24, 32, 48, 64], deep_supervision=True)
    plain.load_state_dict(ema.ema_model.state_dict())  # strict: same keys as the network

    # the evaluator's metric is the EMA model's: all-zero EMA weights predict 0.5 everywhere, thresholded to all
    # lesion, whatever the network's weights
    with torch.no_grad():
        for p in ema.ema_model.parameters():
            p.zero_()
    evaluator.run()
    labels = [torch.as_tensor(d["label"]) for d in parser.get_parsed_content("validate#dataset")]
    all_lesion = sum(float(2 * lab.sum() / (lab.sum() + lab.numel())) for lab in labels) / len(labels)
    assert evaluator.state.metrics["val_mean_dice"] == pytest.approx(all_lesion, abs=1e-5)
    assert any(bool(p.abs().sum() > 0) for p in network.parameters())

    evaluate = ConfigParser()
    evaluate.read_config([str(REPO_ROOT / "configs" / "train.json"), str(REPO_ROOT / "configs" / "evaluate.json")])
    evaluate.update({"ema_momentum": 0.25})
    assert evaluate.get_parsed_content("validate#network") is evaluate.get_parsed_content("network")
