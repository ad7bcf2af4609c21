#!/usr/bin/env python
"""Publish a training run's best model as the released weights in bundle/models/.

Copies ``<run>/models/model.pt``, exports ``model.ts`` with MONAI's ``ckpt_export`` (the bundle's own command),
writes ``SHA256SUMS`` and the run's train/validation split as ids (``bundle/splits/``, no machine paths), so that
the model card's figures can be reproduced with scripts/evaluation_report.py.

Example:
  python scripts/release_weights.py --run runs/release --split-name isic2017_ph2_seed0
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="the training run's output folder (holds models/ and datalist_split.json)")
    p.add_argument("--split-name", default="release_split", help="file name (without .json) for the split ids")
    p.add_argument("--dest", default=str(REPO_ROOT / "bundle"), help="bundle folder (default: %(default)s)")
    args = p.parse_args(argv)

    run, dest = Path(args.run), Path(args.dest)
    best = run / "models" / "model.pt"
    if not best.is_file():
        raise SystemExit(f"{best}: no best model in this run")
    models = dest / "models"
    models.mkdir(parents=True, exist_ok=True)
    shutil.copy2(best, models / "model.pt")
    subprocess.run(
        [sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def",
         "--filepath", str(models / "model.ts"), "--ckpt_file", str(models / "model.pt"),
         "--meta_file", str(REPO_ROOT / "configs" / "metadata.json"),
         "--config_file", str(REPO_ROOT / "configs" / "inference.json"), "--bundle_root", str(REPO_ROOT)],
        check=True, cwd=REPO_ROOT,
    )
    sums = "".join(f"{sha256(models / n)}  {n}\n" for n in ("model.pt", "model.ts"))
    (models / "SHA256SUMS").write_text(sums)

    split = json.loads((run / "datalist_split.json").read_text())
    ids = {k: [{"id": it["id"], "source": it.get("source", "")} for it in split[k]] for k in ("training", "validation")}
    ids.update({k: split[k] for k in ("seed", "val_fraction") if k in split})
    (dest / "splits").mkdir(exist_ok=True)
    # in the model zoo's JSON format (4-space indent, final newline), as tests/bundle/test_model_zoo_checks.py checks
    (dest / "splits" / f"{args.split_name}.json").write_text(json.dumps(ids, indent=4) + "\n")
    print(sums, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
