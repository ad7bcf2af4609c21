# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""The MONAI bundle that ships inside the package: its configs, the released weights and the model card, so that
``egeunet-monai predict`` / ``serve`` / ``evaluate`` work from any folder of a plain ``pip install``.

``egeunet_monai/_bundle/`` has the layout of a MONAI bundle (``configs/``, ``models/``, ``docs/``, ``splits/``,
``LICENSE``). In the repository its entries are symbolic links to ``configs/`` and ``bundle/`` (each file is kept once
in git); setuptools follows them, so a wheel holds the files themselves, and an editable install reads them through
the links.
"""

from __future__ import annotations

import importlib.resources
import os
import shutil
from pathlib import Path

__all__ = ["bundle_dir", "configs_dir", "default_weights", "released_weights", "write_bundle"]

_PACKAGED = "_bundle"


def bundle_dir() -> Path:
    """The packaged bundle folder (``configs/``, ``models/`` with the released weights, ``docs/``, ``LICENSE``)."""
    root = importlib.resources.files("egeunet_monai") / _PACKAGED
    try:
        path = Path(os.fspath(root))
    except TypeError:  # a package imported from a zip: MONAI's ConfigParser needs real files
        raise RuntimeError(f"{root}: egeunet_monai is imported from an archive; install it as a folder.") from None
    if not (path / "configs" / "inference.json").is_file():
        raise FileNotFoundError(
            f"{path / 'configs' / 'inference.json'}: the packaged bundle is incomplete (in a git checkout, "
            "egeunet_monai/_bundle/ holds symbolic links: clone with `git config core.symlinks true`)."
        )
    return path


def configs_dir(bundle_root: str | os.PathLike) -> Path:
    """``<bundle_root>/configs`` when it holds ``inference.json`` (a checkout, or a bundle written out with
    ``egeunet-monai bundle`` and edited), else the packaged configs."""
    own = Path(bundle_root) / "configs"
    return own if (own / "inference.json").is_file() else bundle_dir() / "configs"


def released_weights() -> Path:
    """The released ``model.pt`` (in a checkout, through the link: ``bundle/models/model.pt``)."""
    return (bundle_dir() / "models" / "model.pt").resolve()


def default_weights(bundle_root: str | os.PathLike) -> str:
    """The weights inference uses when none are given (``configs/inference.json``'s ``ckpt_path``), printed with the
    reason: ``<bundle_root>/models/model.pt`` when there is one (what training on your own data writes, or the
    released weights of a bundle written out with ``egeunet-monai bundle``), else the released weights that ship
    with the package. A training on the synthetic default writes its model to ``runs/synthetic_model/`` instead,
    so the quick start never replaces the released weights unasked. Here rather than in the engines so that
    ``predict`` starts without importing MONAI."""
    import hashlib

    own = os.path.join(os.fspath(bundle_root), "models", "model.pt")
    if not os.path.isfile(own):
        path = str(released_weights())
        why = f"released weights; no models/model.pt trained on your data in {bundle_root}"
    else:
        sums = os.path.join(os.path.dirname(own), "SHA256SUMS")
        listed = {}
        if os.path.isfile(sums):
            with open(sums, encoding="utf-8") as f:  # sha256sum's format: "<digest>  <name>" per line
                listed = {parts[1]: parts[0] for parts in map(str.split, f) if len(parts) == 2}
        with open(own, "rb") as f:  # a training that writes over the released weights leaves a mismatch
            released = listed.get("model.pt") == hashlib.sha256(f.read()).hexdigest()
        path = own
        why = "released weights" if released else (
            "your model, trained on your data; --weights or --ckpt_path picks other weights")
    print(f"weights: {path} ({why})", flush=True)
    return path


def write_bundle(out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Copy the packaged bundle into ``out_dir`` (created if needed) and return it; files already there are kept
    unless ``overwrite``, with a ``FileExistsError`` naming the first one."""
    src, out = bundle_dir(), Path(out_dir)
    if not overwrite:
        existing = [
            out / rel for rel in (Path(d, f).relative_to(src) for d, _, files in os.walk(src, followlinks=True)
                                  for f in files) if (out / rel).exists()
        ]
        if existing:
            more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
            raise FileExistsError(f"{existing[0]} exists{more}; pass --overwrite to replace the bundle's files.")
    # the links of a checkout are followed: the copy gets the files themselves
    shutil.copytree(src, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    return out
