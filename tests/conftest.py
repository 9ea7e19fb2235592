import contextlib
import fcntl
import json
import os
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest

# Under pytest-xdist each worker compiles with its own Inductor cache: two workers compiling the same graph
# into one cache raced (a package read half-written: "json parse error"). Set before torch is imported.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if _WORKER and "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(tempfile.gettempdir(), f"neat-tests-inductor-{_WORKER}")
# Each worker also compiles on one thread: the other core is the other worker's (no pool of compile processes).
if _WORKER:
    os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")

# Bundles exported by the tests are signed with a key of this run (runtimes.trust), never one in ~/.config/neat;
# the xdist workers of a run share it (a bundle exported on one worker is loaded on the other).
os.environ["NEAT_HOME"] = os.path.join(tempfile.gettempdir(),
                                       f"neat-tests-home-{os.environ.get('PYTEST_XDIST_TESTRUNUID') or os.getpid()}")

# runtimes.load's measured pick (runtimes.measured) caches per run, and the suite uses the static order, so that
# which artifact a test gets never hangs on timing noise; tests of the measured pick turn it on themselves.
os.environ["NEAT_CACHE_DIR"] = os.environ["NEAT_HOME"] + "-cache"
os.environ.setdefault("NEAT_PICK", "static")

import torch  # noqa: E402

from neat import NeatModel, preset  # noqa: E402

os.environ["COLUMNS"] = "200"  # the CLI's tables unwrapped, however the tests are run (a tty, a log)
# the graphs verified here are tiny (one chunk, one byte): on a shared 2-core machine a second intra-op thread
# mostly waits, and a busy neighbour made a decode step 50x slower with two threads than with one
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def random_model() -> NeatModel:
    """The tiny architecture with random weights, SVF-factored with non-trivial experts (no training)."""
    torch.manual_seed(0)
    model = NeatModel(preset("tiny").replace(entropy_threshold=5.2)).factor_svf()
    with torch.no_grad():
        for layer in model.layers:
            for lin in (layer.mlp.up, layer.mlp.down):
                lin.Z.normal_(0, 1)
        for layer in model.layers:  # make the memory matter: a non-zero second layer
            layer.memory.w2_init.normal_(0, 0.1)
    return model.eval()


@pytest.fixture(scope="session")
def micro_checkpoint(tmp_path_factory):
    """A checkpoint of the `micro` preset with random weights (seeded), for tests whose point is a mechanism,
    not the shipped model's size: exports of it compile and verify in a fraction of the time."""
    from neat.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = NeatModel(preset("micro").replace(entropy_threshold=5.2)).factor_svf()  # patches of varied length
    return save_checkpoint(model.eval(), tmp_path_factory.mktemp("micro") / "micro.safetensors")


@pytest.fixture(scope="session")
def shipped_model() -> NeatModel:
    from neat.checkpoint import load_checkpoint

    return load_checkpoint()


@pytest.fixture(scope="session")
def shipped_eval(shipped_model) -> dict:
    from neat.checkpoint import SHIPPED_PLAIN, load_checkpoint
    from neat.evaluate import evaluate

    return evaluate(shipped_model, load_checkpoint(SHIPPED_PLAIN), chunks=16)  # 2 KB streams: quicker


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock on `path` shared by the xdist workers of one run (they wait for each other)."""
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def neat_bundle(tmp_path_factory):
    """`neat export all` of the shipped model, once per test run: (bundle path, CLI result with exit_code and
    output). Under pytest-xdist the first worker that needs it builds it, the others wait and share it."""
    from click.testing import CliRunner

    from neat.cli import main

    base = tmp_path_factory.getbasetemp()
    root = base.parent if _WORKER else base  # a worker's basetemp is popen-gwN inside the run's own directory
    out, done = root / "neat-bundle", root / "neat-bundle.result.json"
    with _locked(root / "neat-bundle.lock"):
        if not done.exists():
            res = CliRunner().invoke(main, ["export", "all", "--out", str(out), "--compute-capability", "8.9"],
                                     catch_exceptions=False)
            done.write_text(json.dumps({"exit_code": res.exit_code, "output": res.output}))
    return out, SimpleNamespace(**json.loads(done.read_text()))


class ByteRNN(torch.nn.Module):
    """A tiny stateful byte LM (3.4k parameters): forward(tokens int32 (B, 8), h (B, 4)) -> (logits (B, 8, 256),
    new h). For the tests of serving a bundle (Triton repository, Ray Serve): a bundle in seconds, not NEAT."""

    T, H = 8, 4

    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.emb = torch.nn.Embedding(256, self.H)
        self.cell = torch.nn.Linear(2 * self.H, self.H)
        self.head = torch.nn.Linear(self.H, 256)

    def forward(self, tokens, h):
        e, outs = self.emb(tokens), []  # (B, T, H)
        for t in range(self.T):
            h = torch.tanh(self.cell(torch.cat([e[:, t], h], dim=-1)))  # (B, H)
            outs.append(self.head(h))
        return torch.stack(outs, dim=1), h


@pytest.fixture(scope="session")
def rnn_bundle(tmp_path_factory) -> Path:
    """ByteRNN exported to `exported` and `onnx` (about 6 s), once per worker that needs it (GROUPED)."""
    import exporters

    model = ByteRNN().eval()
    result = exporters.export(model, (torch.zeros(1, model.T, dtype=torch.int32),), state={"h": torch.zeros(1, model.H)},
                              batch=(1, 4), name="byte-rnn", input_names=["tokens"], output_names=["logits"],
                              ranges={"tokens": (0, 256)}, argmax=["logits"], targets=["exported", "onnx"],
                              out=tmp_path_factory.mktemp("rnn") / "bundle")
    return result.bundle


# The fixtures that cost minutes, and the order that keeps both workers busy under pytest-xdist
# (`-n 2 --dist loadgroup`): the NEAT bundle is exported first (BUILDS_FIRST) while the other worker builds the
# smaller shared fixtures (GROUPED: each test using one runs on the worker that built it) and runs the tests
# that need no bundle; the tests that use the NEAT bundle come last, on whichever worker is free. Tests using a
# module-scoped fixture run on one worker per module (each module fixture built once). Tests of a shared
# build are `slow`: left out of the quick loop, `-m "not slow"`.
GROUPED = ("neat_fp16_bundle", "toy_bundle", "rnn_bundle")
BUILDS_FIRST = "tests/neat/test_export_cli.py::test_export_all_verifies_every_artifact"


def _group(item) -> str | None:
    for name in GROUPED:
        if name in item.fixturenames:
            return name
    defs = item._fixtureinfo.name2fixturedefs
    if any(d.scope == "module" for name in item.fixturenames for d in defs.get(name, ())):
        return item.module.__name__
    return None


def _order(item) -> int:
    if item.nodeid == BUILDS_FIRST:
        return 0
    if "neat_bundle" in item.fixturenames:
        return 3
    return 1 if any(name in item.fixturenames for name in GROUPED) else 2


@pytest.hookimpl(tryfirst=True)  # before xdist reads the marks (its own hook turns them into groups)
def pytest_collection_modifyitems(config, items):
    for item in items:
        group = _group(item)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))
        if any(name in item.fixturenames for name in (*GROUPED, "neat_bundle")):
            item.add_marker(pytest.mark.slow)
    items.sort(key=_order)  # stable: the collection order within each rank


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False  # xdist: keep the order above, not the largest group first
