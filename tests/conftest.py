"""Shared test helpers: the official state-dict layouts, small generated ImageFolders, a BatchNorm+ECA pair."""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
OFFICIAL_DIR = DATA / "official_state_dicts"

if str(ROOT) not in sys.path:  # main.py, light_main.py and paras_flops.py live at the top level
    sys.path.insert(0, str(ROOT))

_DTYPES = {"float32": torch.float32, "int64": torch.int64}


def interpreter_rejects_numpy() -> bool:
    """Triton 3.6's interpreter turns 1-element arrays into Python scalars, which NumPy 2.5 no longer allows:
    every interpreted kernel fails with "only 0-dimensional arrays can be converted to Python scalars"
    (GPU image with Triton 3.6.0 and NumPy 2.5.2, 2026-11-21). Triton 3.9 with NumPy 2.4 (CI) runs them."""
    import numpy
    try:
        import triton
    except ImportError:
        return False
    version = lambda text: tuple(int(part) for part in text.split(".")[:2] if part.isdigit())  # noqa: E731
    return version(numpy.__version__) >= (2, 5) and version(triton.__version__) < (3, 9)


def compile_triton_for_sm90(kernel, types: dict[str, str], constants: dict) -> None:
    """Compile a Triton kernel for Hopper (sm_90) with Triton's real compiler, ptxas included; no GPU needed.
    ``types``: the runtime arguments' Triton types ("*bf16", "i32", ...); ``constants``: the constexprs.
    Skips the calling test where this Triton's compiler API is another."""
    import tempfile
    import warnings
    import triton
    try:
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource
    except ImportError:
        pytest.skip(f"this Triton ({triton.__version__}) has no GPUTarget/ASTSource")
    signature = {name: "constexpr" if name in constants else types[name] for name in kernel.arg_names}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            source = ASTSource(fn=kernel, signature=signature, constexprs=constants)
        except (TypeError, KeyError) as error:
            pytest.skip(f"this Triton's ASTSource takes another signature format ({error})")
        # Triton caches every compile, by default in the home folder: a folder of this call's own instead
        with tempfile.TemporaryDirectory(prefix="triton-cache-") as cache, pytest.MonkeyPatch.context() as patch:
            patch.setenv("TRITON_CACHE_DIR", cache)
            compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32))
    assert compiled.asm["cubin"]


INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"   # this process runs Triton's kernels interpreted


def interpreter_parent(test):
    """Marks a file's test that runs the file's interpreter tests in a child process (:func:`run_interpreter_tests`):
    skipped inside that child, and where this Triton's interpreter cannot run with the installed NumPy."""
    test = pytest.mark.skipif(interpreter_rejects_numpy(),
                              reason="this Triton's interpreter does not run with NumPy >= 2.5")(test)
    return pytest.mark.skipif(INTERPRETED, reason="this is the subprocess's parent")(test)


def run_interpreter_tests(test_file: str) -> str:
    """Run ``test_file``'s tests named ``*interpreter*`` in a child pytest with ``TRITON_INTERPRET=1``: the
    interpreter is chosen when Triton's kernels are defined, so it needs a process of its own. Returns the
    child's output after asserting that it passed and ran at least one test."""
    import subprocess
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "interpreter",
                             str(Path(test_file).resolve())], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "failed" not in result.stdout, result.stdout[-2000:]
    return result.stdout


def load_script(name: str):
    """Import ``scripts/<name>.py`` as a module (scripts/ is not a package)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def official_layouts() -> dict[str, Path]:
    """{'eca_resnet50_k3557': path, ...} for every released checkpoint."""
    return {p.stem: p for p in sorted(OFFICIAL_DIR.glob("*.tsv"))}


def read_layout(path: Path) -> tuple[list[tuple[str, tuple[int, ...], torch.dtype]], int]:
    """The (key, shape, dtype) rows of an official layout file, and its stated parameter count."""
    rows, params = [], None
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            params = int(re.search(r"(\d+) parameters", line).group(1))
            continue
        key, shape, dtype = line.split("\t")
        dims = () if shape == "scalar" else tuple(int(d) for d in shape.split("x"))
        rows.append((key, dims, _DTYPES[dtype]))
    return rows, params


def official_state_dict(path: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state_dict with the official keys (``module.`` prefix kept), shapes and dtypes, random values."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape, dtype in read_layout(path)[0]:
        if dtype.is_floating_point:
            value = torch.randn(shape, generator=gen, dtype=dtype)
            if key.endswith("running_var"):
                value = value.abs() + 0.5
        else:
            value = torch.randint(0, 1000, shape, generator=gen, dtype=dtype)
        out[key] = value
    return out


# `make test` runs the suite in one pytest-xdist worker per core: each worker then computes on one thread,
# so the workers never oversubscribe the cores. Set once, before any fixture trains: runs compared for
# bit-identity must use the same number of threads (CPU reductions split over more threads round differently).
PARALLEL_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
TORCH_THREADS = max(1, min(2, (os.cpu_count() or 1) // PARALLEL_WORKERS))
torch.set_num_threads(TORCH_THREADS)


@pytest.fixture(autouse=True)
def _quiet_threads():
    torch.set_num_threads(TORCH_THREADS)  # a test may have changed it
    yield


# ---------------------------------------------------------------------------------- training fixtures

# A tiny, fast training set-up: 32x32 images, batch 8, no worker processes, deterministic.
SMALL_RUN = ["-b", "8", "--img-size", "32", "--val-resize", "32", "-j", "0", "--seed", "3", "-p", "2",
             "--deterministic"]


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    """3 classes x (16 train + 5 val) 32x32 JPEGs: 15 validation images, an odd number."""
    from imagefolder import make_image_folder
    return make_image_folder(tmp_path_factory.mktemp("imagefolder"))


# The two-process run of the DDP test (test_main): resnet18, 2 epochs, EMA and label smoothing, so that every
# state a checkpoint saves is exercised when an interrupted copy of the run is resumed.
DDP_RUN = [*SMALL_RUN, "-a", "resnet18", "--epochs", "2", "--ema", "--ema-decay", "0.9", "--label-smoothing", "0.1"]
DDP_ENV = {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def torchrun_main(image_folder: Path, out: Path, port: int, extra=()) -> list[str]:
    """The command line of main.py under torchrun with two processes on this machine."""
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
            str(ROOT / "main.py"), str(image_folder), *DDP_RUN, "--output", str(out), *map(str, extra)]


def one_error_line(err: str, *phrases: str) -> str:
    """The one 'error:' line of a refused command's stderr, holding every phrase, with no traceback."""
    assert "Traceback" not in err
    message = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(message) == 1, err[-2000:]
    for phrase in phrases:
        assert phrase in message[0], message[0]
    return message[0]


def run_main(argv, defaults=None) -> int:
    """main.py's main() in this process (fast: no interpreter start-up)."""
    import main
    return main.main([str(a) for a in argv], defaults)


def run_script(script: str, argv, timeout: float = 300, **kwargs):
    """A real process: ``python script argv``; returns the CompletedProcess (text output)."""
    import subprocess
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, argv)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=kwargs.pop("cwd", ROOT), **kwargs)


def state_dicts_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def bn_and_eca(channels: int, k: int, seed: int = 0):
    """A float64 training BatchNorm2d (random affine parameters and running statistics) and ECA module (random
    kernel; implementation 'auto', which runs the plain code on CPU tensors): a block tail's two modules."""
    from torch import nn
    from ecanet.models.eca_module import EcaModule
    torch.manual_seed(seed)
    bn = nn.BatchNorm2d(channels).double()
    nn.init.uniform_(bn.weight, 0.5, 1.5)
    nn.init.uniform_(bn.bias, -0.5, 0.5)
    bn.running_mean.uniform_(-0.2, 0.2)
    bn.running_var.uniform_(0.5, 1.5)
    eca = EcaModule(channels, k).double()
    nn.init.normal_(eca.conv.weight)
    return bn, eca
