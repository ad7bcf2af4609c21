"""How :mod:`egeunet_monai.accel.kernels` builds the C++ CPU kernels on a machine shared by several
checkouts and processes: a build folder named by what the library is built from, concurrent builds that both end
with a working library, and a finished build loaded without a word about building."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from egeunet_monai.accel import kernels
from tests.conftest import REPO_ROOT, require_cpu_kernels

BUILD_TIMEOUT_S = 900  # two builds at once on a loaded 2-core machine; one alone takes 30-60 s

# A process that builds or loads the kernels, runs one of them in float64 against the plain PyTorch module and
# prints the library's path. With a folder argument it first waits there for the other process (a start barrier),
# so that both look for the library before either has finished building it.
CHILD = r"""
import logging, os, sys, time
from pathlib import Path

logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)  # every log record shows
import torch
from egeunet_monai.accel import kernels
from egeunet_monai.networks.blocks import ChannelFirstLayerNorm

if len(sys.argv) > 1:
    barrier = Path(sys.argv[1])
    (barrier / str(os.getpid())).touch()
    deadline = time.time() + 120
    while len(list(barrier.iterdir())) < 2 and time.time() < deadline:
        time.sleep(0.05)
assert kernels.load(), "the kernels did not load"
torch.manual_seed(0)
norm = ChannelFirstLayerNorm(5).double()
with torch.no_grad():
    norm.weight.normal_()
    norm.bias.normal_()
    x = torch.randn(2, 5, 9, 11, dtype=torch.float64) * 3 + 1
    y = torch.ops.egeunet_cpu.channel_layer_norm_forward(x, norm.weight, norm.bias, norm.eps)[0]
    torch.testing.assert_close(y, norm(x), rtol=0, atol=1e-12)
print(kernels.library_path())
"""


def _start(extensions_dir: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TORCH_EXTENSIONS_DIR": str(extensions_dir)}
    return subprocess.Popen([sys.executable, "-c", CHILD, *args], env=env, cwd=REPO_ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def _finish(proc: subprocess.Popen) -> tuple[str, str]:
    try:
        out, err = proc.communicate(timeout=BUILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    assert proc.returncode == 0, f"exit code {proc.returncode}\n{out[-3000:]}\n{err[-3000:]}"
    return out, err


@pytest.fixture(scope="module")
def concurrent_build(tmp_path_factory: pytest.TempPathFactory):
    """Two processes started together on an empty ``TORCH_EXTENSIONS_DIR``: their outputs and that folder."""
    require_cpu_kernels()  # skips where no compiler can build them (fails under CI)
    root = tmp_path_factory.mktemp("torch_extensions")
    barrier = tmp_path_factory.mktemp("barrier")
    procs = [_start(root, str(barrier)) for _ in range(2)]
    return root, [_finish(p) for p in procs]


def test_two_processes_building_at_once_both_load_a_working_kernel(concurrent_build):
    root, results = concurrent_build
    for _, err in results:  # both looked before either had finished: each built its own copy
        assert "building the C++ CPU kernels" in err
    paths = {Path(out.strip()) for out, _ in results}
    assert len(paths) == 1, paths
    library = paths.pop()
    assert library.parent.parent == root and library.is_file()
    assert list(library.parent.iterdir()) == [library]  # the temporary build folders are gone


def test_loading_a_finished_build_says_nothing_about_building(concurrent_build):
    root, results = concurrent_build
    library = Path(results[0][0].strip())
    before = library.stat()
    out, err = _finish(_start(root))
    assert Path(out.strip()) == library
    assert "building" not in (out + err).lower(), err
    after = library.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # loaded, not rebuilt


def _library_path_of_copy(folder: Path, change: tuple[str, str] | None = None) -> Path:
    """``library_path()`` of a copy of ``kernels.py`` and ``csrc/`` in ``folder``, with ``change``
    (a source's name, a line) appended to one source file."""
    folder.mkdir()
    shutil.copy(kernels.__file__, folder / "kernels.py")
    shutil.copytree(kernels.CSRC, folder / "csrc")
    if change is not None:
        source = folder / "csrc" / change[0]
        source.write_text(source.read_text() + change[1])
    spec = importlib.util.spec_from_file_location(f"copied_cpu_kernels_{folder.name}", folder / "kernels.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.library_path()


def test_the_build_folder_follows_the_sources_not_the_checkout(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "torch_extensions"))
    this = kernels.library_path()
    assert this.parent.parent == tmp_path / "torch_extensions"
    assert _library_path_of_copy(tmp_path / "same") == this  # another checkout of the same sources shares it
    for name in ("network_cpu.cpp", "common.h"):  # a comment in a source or in a header
        changed = _library_path_of_copy(tmp_path / name.replace(".", "_"), (name, "// one more comment\n"))
        assert changed.parent != this.parent and changed.parent.parent == this.parent.parent
