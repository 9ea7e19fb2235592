import os

import pytest
import torch

from neat import NeatModel, preset

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
def shipped_model() -> NeatModel:
    from neat.checkpoint import load_checkpoint

    return load_checkpoint()


@pytest.fixture(scope="session")
def shipped_eval(shipped_model) -> dict:
    from neat.checkpoint import SHIPPED_PLAIN, load_checkpoint
    from neat.evaluate import evaluate

    return evaluate(shipped_model, load_checkpoint(SHIPPED_PLAIN), chunks=16)  # 2 KB streams: quicker


@pytest.fixture(scope="session")
def neat_bundle(tmp_path_factory):
    """`neat export all` of the shipped model, once per session: (bundle path, CLI result)."""
    from click.testing import CliRunner

    from neat.cli import main

    out = tmp_path_factory.mktemp("neat") / "bundle"
    res = CliRunner().invoke(main, ["export", "all", "--out", str(out), "--compute-capability", "8.9"],
                             catch_exceptions=False)
    return out, res
