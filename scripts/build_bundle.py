#!/usr/bin/env python3
"""Assemble the self-contained MONAI bundle ``egeunet_skin_lesion_segmentation`` (folder + zip).

The bundle is put together from the repository, never kept twice in git:

    configs/   -> <bundle>/configs/   (inference.json, train.json, metadata.json, ...; egeunet_monai.* -> scripts.*,
                                       in the model zoo's JSON format)
    egeunet_monai/ -> <bundle>/scripts/ (the modules the configs use and what they import)
    bundle/    -> <bundle>/           (docs/README.md, LICENSE, data licence, ...; whatever exists but schema/)
    models/    -> <bundle>/models/    (model.pt, and model.ts when present: the weights you trained; without
                                       them, the released weights of bundle/models/ with their SHA256SUMS)

The output is ``<out>/<name>/`` plus ``<out>/<name>_v<version>.zip`` (the zip holds the folder at its top
level, as model-zoo bundles do). The name ends in ``_segmentation`` so that MONAI Label treats the bundle as a
segmentation model.

With ``--monailabel-app DIR`` the bundle is also placed into ``DIR/model/<name>/`` of a MONAI Label app. When DIR
has no ``main.py`` yet, the app is made first: the ``monaibundle`` sample app that ships inside the monailabel
package (from the MONAI Label venv made by ``scripts/setup_monailabel_env.sh``, as
``monailabel apps --download --name monaibundle`` would copy it), its ``main.py`` renamed ``monaibundle_main.py``,
and the files of ``monailabel_app/`` (a ``main.py`` that adds active learning by TTA uncertainty to the sample's).

The bundle stands alone: it runs with MONAI and published packages only (``required_packages_version`` of
configs/metadata.json), as the MONAI model zoo requires. The code its configs call (the network, its blocks and
the few helpers: readers, datalists, loss, metrics, handlers) is copied from the ``egeunet_monai`` package into the
bundle's ``scripts/`` package at build time, import statements renamed ``egeunet_monai`` -> ``scripts``, and the
bundle's configs name ``scripts.*`` instead of ``egeunet_monai.*`` (the model zoo's convention: MONAI, MONAI Label
and the zoo's CI put the bundle root on ``sys.path``). The C++ sources of the CPU kernels go along; they compile on
first CPU use where a compiler and ninja exist, else the PyTorch operators run (as in the package). Nothing of it is
kept in git twice: edit the package and rebuild.

Examples::

    python scripts/build_bundle.py                                   # -> dist/egeunet_skin_lesion_segmentation/
    python scripts/build_bundle.py --monailabel-app apps/monaibundle # + place it into a MONAI Label app
    python scripts/build_bundle.py --weights /path/to/other_model.pt --out /tmp/b --no-zip
"""

from __future__ import annotations

import argparse
import ast
import filecmp
import json
import os
import re
import shutil
import sys
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_NAME = "egeunet_skin_lesion_segmentation"
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".DS_Store", ".ipynb_checkpoints")
# repository-only parts of bundle/: the offline copy of the model zoo's metadata schema (the zoo fetches its own)
NOT_SHIPPED = ("schema",)
# the MONAI Label app's own files (main.py on top of the monaibundle sample app, the uncertainty scoring)
APP_SOURCES = REPO_ROOT / "monailabel_app"

PACKAGE = "egeunet_monai"
BUNDLE_PACKAGE = "scripts"  # the model zoo's name for a bundle's own code, imported with the bundle root on sys.path
# a dotted name under the package, as the configs' "_target_"s and "$" expressions write it
PACKAGE_REFERENCE = re.compile(rf"\b{PACKAGE}(?!\w)((?:\.\w+)*)")
PACKAGE_DATA = ("csrc",)  # folders of non-Python files a copied package needs (the C++ kernels' sources)
COPY_HEADER = (
    "# Copied from {source} by scripts/build_bundle.py (imports renamed {package} -> {bundle}): "
    "edit the package, not this copy.\n"
)

# ids MONAI Label's BundleInferTask / BundleTrainTask (monailabel 0.8.5) read from the configs
INFER_IDS = ("network_def", "bundle_root", "device", "preprocessing", "inferer", "postprocessing")
TRAIN_IDS = (
    "bundle_root",
    "device",
    "network",
    "train#trainer#max_epochs",
    "train#dataset#data",
    "validate#dataset#data",
    "train#handlers",
    "run",
)


# the model zoo bundle's inference network (zoo_inference_config)
ZOO_NETWORK = f"${PACKAGE}.export.load_onnx_predictor(@onnx_path) if @onnx_path else @network_def.to(@device)"
ZOO_CHECKPOINT_LOADER = {
    "_target_": "CheckpointLoader",
    "_disabled_": "$bool(@onnx_path)",
    "load_path": "@ckpt_path",
    "load_dict": {"model": "@network"},
    "map_location": "@device",
}


class BundleError(RuntimeError):
    """The bundle cannot be assembled (missing inputs or a config MONAI Label cannot use)."""


def _load_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BundleError(f"cannot read {path}: {exc}") from exc


def _has_id(config: dict, id_: str) -> bool:
    node = config
    for part in id_.split("#"):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    return True


def check_monailabel_requirements(configs_dir: Path) -> list[str]:
    """Problems that would keep MONAI Label from loading the bundle (empty list: none found)."""
    problems: list[str] = []
    infer_path = configs_dir / "inference.json"
    meta_path = configs_dir / "metadata.json"
    train_path = configs_dir / "train.json"
    for path in (infer_path, meta_path):
        if not path.is_file():
            problems.append(f"{path.name} is missing")
    if problems:
        return problems

    infer = _load_json(infer_path)
    problems += [f"inference.json lacks the id '{i}'" for i in INFER_IDS if not _has_id(infer, i)]
    displayable = infer.get("displayable_configs")
    if not isinstance(displayable, dict) or displayable.get("result_extension") != ".png":
        problems.append("inference.json lacks displayable_configs with result_extension '.png'")

    meta = _load_json(meta_path)
    fmt = meta.get("network_data_format", {})
    inputs, outputs = fmt.get("inputs", {}), fmt.get("outputs", {})
    if not inputs or next(iter(inputs)) != "image":
        problems.append("metadata.json: the first network_data_format input must be 'image'")
    if not outputs or next(iter(outputs)) != "pred":
        problems.append("metadata.json: the first network_data_format output must be 'pred'")
    if inputs:
        shape = next(iter(inputs.values())).get("spatial_shape")
        if not isinstance(shape, list) or len(shape) != 2:
            problems.append("metadata.json: the image's spatial_shape must have 2 elements (2-D model)")
    if outputs:
        # MONAI Label's label map is {name: int(key)} of channel_def, "background" left out: the keys are the
        # labels' values in the masks it shows and saves, and 0 is the background there
        channel_def = next(iter(outputs.values())).get("channel_def", {})
        labels = {k: v for k, v in channel_def.items() if str(v).lower() != "background"}
        if not labels:
            problems.append("metadata.json: the pred channel_def names no non-background label")
        if any(not str(k).isdigit() or int(k) < 1 for k in labels):
            problems.append(f"metadata.json: the pred channel_def's labels need mask values >= 1 as keys: {labels}")

    if train_path.is_file():
        train = _load_json(train_path)
        problems += [f"train.json lacks the id '{i}'" for i in TRAIN_IDS if not _has_id(train, i)]
    else:
        problems.append("train.json is missing (MONAI Label could infer but not train)")
    return problems


def _copy_tree_into(src: Path, dst: Path, skip: tuple[str, ...] = ()) -> None:
    for item in sorted(src.iterdir()):
        if IGNORED(str(src), [item.name]) or item.name in skip:
            continue
        target = dst / item.name
        if item.is_dir():
            shutil.copytree(item, target, ignore=IGNORED, dirs_exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(item, target)


def write_zoo_json(path: Path, data: object) -> None:
    """``data`` as the model zoo's pre-commit hooks want it: 4-space indent, keys in their order, ASCII, final newline
    (``pretty-format-json --no-sort-keys --indent=4`` and ``end-of-file-fixer``)."""
    path.write_text(json.dumps(data, indent=4) + "\n", encoding="utf-8")


def _module_path(package_dir: Path, module: str) -> Path | None:
    """The source file of ``module`` (``egeunet_monai.a.b``) under ``package_dir``, or None if it is no module."""
    parts = module.split(".")[1:]
    base = package_dir.joinpath(*parts)
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _as_module(package_dir: Path, dotted: str) -> str | None:
    """The longest prefix of ``dotted`` (``egeunet_monai.networks.nets.EGEUNet``) that is a module."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        if _module_path(package_dir, ".".join(parts[:end])) is not None:
            return ".".join(parts[:end])
    return None


def _package_imports(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """The package's modules that ``module`` imports (at any depth: lazy imports inside functions count too)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing module's package
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # "from pkg import submodule"
    return {name for name in found if name == PACKAGE or name.startswith(PACKAGE + ".")}


def config_references(configs_dir: Path) -> set[str]:
    """Every ``egeunet_monai.*`` name the configs' ``_target_``s and ``$`` expressions use."""
    names: set[str] = set()

    def visit(node: object, key: str | None = None) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                visit(v, k)
        elif isinstance(node, list):
            for v in node:
                visit(v)
        elif isinstance(node, str) and (key == "_target_" or node.startswith("$")):
            names.update(PACKAGE + m[1] for m in PACKAGE_REFERENCE.finditer(node))

    for path in sorted(configs_dir.glob("*.json")):
        visit(_load_json(path))
    return names


def module_closure(references: set[str], package_dir: Path) -> list[str]:
    """The package's modules the configs need: those they name, what these import, and their parent packages."""
    todo = [PACKAGE]
    for name in sorted(references):
        module = _as_module(package_dir, name)
        if module is None:
            raise BundleError(f"the configs name {name}, which is no module of {package_dir}")
        todo.append(module)
    seen: set[str] = set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        parts = module.split(".")
        todo += [".".join(parts[:end]) for end in range(1, len(parts))]  # the parent packages run first
        path = _module_path(package_dir, module)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        todo += [m for name in _package_imports(tree, module, path.name == "__init__.py")
                 if (m := _as_module(package_dir, name)) is not None]
    return sorted(seen)


def rename_imports(source: str, filename: str = "<source>") -> str:
    """``source`` with each absolute import of the package renamed to the bundle's ``scripts`` package; nothing
    else changes (docstrings, log names and messages keep the package's name)."""
    lines = source.splitlines(keepends=True)
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
        else:
            continue
        if not any(n == PACKAGE or n.startswith(PACKAGE + ".") for n in names):
            continue
        for i in range(node.lineno - 1, node.end_lineno):
            lines[i] = re.sub(rf"\b{PACKAGE}\b", BUNDLE_PACKAGE, lines[i])
    return "".join(lines)


def copy_package_code(scripts_dir: Path, configs_dir: Path, package_dir: Path = REPO_ROOT / PACKAGE) -> list[str]:
    """Write the package's modules that the configs need into ``scripts_dir`` (the bundle's ``scripts/``), with
    their imports renamed; returns the modules copied."""
    modules = module_closure(config_references(configs_dir), package_dir)
    for module in modules:
        source = _module_path(package_dir, module)
        relative = source.relative_to(package_dir)
        target = scripts_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        header = COPY_HEADER.format(source=f"{PACKAGE}/{relative.as_posix()}", package=PACKAGE, bundle=BUNDLE_PACKAGE)
        target.write_text(header + rename_imports(source.read_text(encoding="utf-8"), str(source)), encoding="utf-8")
        if source.name == "__init__.py":
            for data in PACKAGE_DATA:
                if (source.parent / data).is_dir():
                    shutil.copytree(source.parent / data, target.parent / data, ignore=IGNORED, dirs_exist_ok=True)
    return modules


def bundle_config(config: object, key: str | None = None) -> object:
    """A config with its ``_target_``s and ``$`` expressions naming ``scripts.*`` instead of ``egeunet_monai.*``."""
    if isinstance(config, dict):
        return {k: bundle_config(v, k) for k, v in config.items()}
    if isinstance(config, list):
        return [bundle_config(v) for v in config]
    if isinstance(config, str) and (key == "_target_" or config.startswith("$")):
        return PACKAGE_REFERENCE.sub(lambda m: BUNDLE_PACKAGE + m[1], config)
    return config


def zoo_inference_config(config: dict) -> dict:
    """The package's inference.json with the model zoo's network: ``network_def`` loaded by MONAI's
    ``CheckpointLoader`` (or the ``onnx_path`` model), instead of the package's
    :func:`egeunet_monai.inference.load_runtime` and its ``runtime`` id.

    Why not ship load_runtime in the bundle's ``scripts/``: it exports ONNX once per weights file into a cache in the
    user's home folder and needs the ``onnx`` exporter packages, which the zoo's environment need not have; its
    export fixes the image size, so the zoo's checks (which infer with only ``Resized`` overridden to 32 x 32) would
    fail; and MONAI Label's bundle task builds ``network_def`` and loads the weights itself either way. The zoo's
    users run the network as every zoo bundle does; the package's commands get the fast runtime."""
    config = dict(config)
    config.pop("runtime", None)
    config["network"] = ZOO_NETWORK
    handlers = [h for h in config.get("handlers", []) if h.get("_target_") != "CheckpointLoader"]
    config["handlers"] = [dict(ZOO_CHECKPOINT_LOADER), *handlers]
    return config


def write_bundle_configs(configs_dir: Path, target: Path) -> None:
    """The repository's configs, pointed at the bundle's ``scripts/``, in the model zoo's JSON format
    (inference.json with the zoo's network: :func:`zoo_inference_config`); other files (logging.conf) as they are."""
    target.mkdir(parents=True, exist_ok=True)
    for item in sorted(configs_dir.iterdir()):
        if IGNORED(str(configs_dir), [item.name]) or not item.is_file():
            continue
        if item.suffix == ".json":
            config = _load_json(item)
            if item.name == "inference.json":
                config = zoo_inference_config(config)
            write_zoo_json(target / item.name, bundle_config(config))
        else:
            shutil.copy2(item, target / item.name)


def assemble(
    out_dir: Path,
    name: str = DEFAULT_NAME,
    configs_dir: Path = REPO_ROOT / "configs",
    bundle_dir: Path = REPO_ROOT / "bundle",
    models_dir: Path = REPO_ROOT / "models",
    weights: Path | None = None,
    allow_missing_weights: bool = False,
    check: bool = True,
    package_dir: Path = REPO_ROOT / PACKAGE,
) -> Path:
    """Build ``out_dir/name`` and return its path."""
    if not configs_dir.is_dir():
        raise BundleError(f"configs folder not found: {configs_dir}")
    if check:
        problems = check_monailabel_requirements(configs_dir)
        if problems:
            raise BundleError(
                "the configs are not usable by MONAI Label:\n  - " + "\n  - ".join(problems) + "\n(--no-check skips this)"
            )

    target = out_dir / name
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)

    # bundle/ first (docs, licences, maybe extra configs), then configs/ on top: configs/ is the source of truth
    if bundle_dir.is_dir():
        _copy_tree_into(bundle_dir, target, skip=NOT_SHIPPED)
    else:
        print(f"note: {bundle_dir} does not exist; the bundle gets no docs/LICENSE from it", file=sys.stderr)
    write_bundle_configs(configs_dir, target / "configs")
    copy_package_code(target / BUNDLE_PACKAGE, configs_dir, package_dir)

    models_out = target / "models"
    models_out.mkdir(exist_ok=True)
    pt = weights if weights is not None else models_dir / "model.pt"
    shipped = models_out / "model.pt"  # the released weights, when bundle/models/ brought them
    if pt.is_file() and not (shipped.is_file() and filecmp.cmp(pt, shipped, shallow=False)):
        # other weights than the released ones: the released TorchScript and checksums would not match them
        for released in ("model.ts", "SHA256SUMS"):
            (models_out / released).unlink(missing_ok=True)
        shutil.copy2(pt, shipped)
    elif pt.is_file():
        pass  # the released weights themselves
    elif weights is None and (models_out / "model.pt").is_file():
        # no trained weights of one's own: the released weights that bundle/models/ brought along
        print(f"note: no {pt}; the bundle keeps the released weights from {bundle_dir / 'models'}", file=sys.stderr)
    elif not allow_missing_weights:
        raise BundleError(f"no weights at {pt}: MONAI Label ignores a bundle without models/model.pt or model.ts")
    ts = models_dir / "model.ts"
    if weights is None and ts.is_file():
        shutil.copy2(ts, models_out / "model.ts")
    return target


def make_zip(bundle: Path, out_dir: Path) -> Path:
    """Zip ``bundle`` (the folder at the zip's top level) as ``<name>_v<version>.zip`` in ``out_dir``."""
    version = None
    meta = bundle / "configs" / "metadata.json"
    if meta.is_file():
        version = _load_json(meta).get("version")
    zip_path = out_dir / (f"{bundle.name}_v{version}.zip" if version else f"{bundle.name}.zip")
    if zip_path.exists():
        zip_path.unlink()
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(bundle.rglob("*")):
            if path.is_file():
                zf.write(path, Path(bundle.name) / path.relative_to(bundle))
    return zip_path


def default_monailabel_venv() -> Path:
    return Path(os.environ.get("MONAILABEL_VENV", REPO_ROOT / ".venv-monailabel"))


def find_sample_app(venv: Path, app_name: str = "monaibundle") -> Path | None:
    """The sample app that ships inside the monailabel wheel (installed under ``<venv>/monailabel/sample-apps``)."""
    for candidate in (venv / "monailabel" / "sample-apps" / app_name, venv / "local" / "monailabel" / "sample-apps" / app_name):
        if (candidate / "main.py").is_file():
            return candidate
    return None


def place_into_app(bundle: Path, app_dir: Path, venv: Path, overwrite: bool) -> Path:
    """Copy ``bundle`` into ``app_dir/model/``; create the monaibundle app from the installed sample first if needed."""
    if not (app_dir / "main.py").is_file():
        if app_dir.exists() and any(app_dir.iterdir()):
            raise BundleError(f"{app_dir} exists, is not empty and has no main.py: not a MONAI Label app")
        sample = find_sample_app(venv)
        if sample is None:
            raise BundleError(
                f"{app_dir} has no main.py and no monaibundle sample app was found in {venv}; run "
                "scripts/setup_monailabel_env.sh first (or set MONAILABEL_VENV / --monailabel-venv), or create the app "
                f"with: monailabel apps --download --name monaibundle --output {app_dir.parent}"
            )
        shutil.copytree(
            sample, app_dir, ignore=shutil.ignore_patterns("logs", "model", "__pycache__"), dirs_exist_ok=True
        )
        # our main.py builds on the sample's (active learning by TTA uncertainty), which it imports under this name
        (app_dir / "main.py").rename(app_dir / "monaibundle_main.py")
        for source in sorted(APP_SOURCES.glob("*.py")):
            shutil.copy2(source, app_dir / source.name)
        print(f"created MONAI Label app {app_dir} from {sample} and {APP_SOURCES}")
    dest = app_dir / "model" / bundle.name
    if dest.exists():
        if not overwrite:
            raise BundleError(
                f"{dest} already exists (it may hold checkpoints trained in MONAI Label); pass --overwrite to replace it"
            )
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(bundle, dest)
    return dest


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "dist", help="output folder (default: <repo>/dist)")
    parser.add_argument("--name", default=DEFAULT_NAME, help=f"bundle folder name (default: {DEFAULT_NAME})")
    parser.add_argument("--configs", type=Path, default=REPO_ROOT / "configs", help="configs folder (default: <repo>/configs)")
    parser.add_argument(
        "--bundle-extras", type=Path, default=REPO_ROOT / "bundle", help="docs/LICENSE folder (default: <repo>/bundle)"
    )
    parser.add_argument("--models", type=Path, default=REPO_ROOT / "models", help="weights folder (default: <repo>/models)")
    parser.add_argument("--weights", type=Path, default=None, help="use this file as models/model.pt instead")
    parser.add_argument("--allow-missing-weights", action="store_true", help="build even without model.pt")
    parser.add_argument("--no-zip", action="store_true", help="do not write the zip")
    parser.add_argument("--no-check", action="store_true", help="skip the check of the ids MONAI Label needs")
    parser.add_argument(
        "--monailabel-app",
        type=Path,
        default=None,
        metavar="DIR",
        help="also place the bundle into DIR/model/ of a MONAI Label app (when DIR has no main.py: made from the "
        "installed monaibundle sample app and monailabel_app/, which adds active learning by TTA uncertainty)",
    )
    parser.add_argument(
        "--monailabel-venv",
        type=Path,
        default=None,
        help="MONAI Label venv holding the sample app (default: $MONAILABEL_VENV or <repo>/.venv-monailabel)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a bundle already in the app's model/ folder")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out.resolve()
    try:
        bundle = assemble(
            out,
            name=args.name,
            configs_dir=args.configs,
            bundle_dir=args.bundle_extras,
            models_dir=args.models,
            weights=args.weights,
            allow_missing_weights=args.allow_missing_weights,
            check=not args.no_check,
        )
        print(f"bundle: {bundle}")
        if not args.no_zip:
            print(f"zip:    {make_zip(bundle, out)}")
        if args.monailabel_app is not None:
            venv = args.monailabel_venv or default_monailabel_venv()
            dest = place_into_app(bundle, args.monailabel_app.resolve(), venv, args.overwrite)
            print(f"placed: {dest}")
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
