import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from toy import toy_spec  # noqa: E402


@pytest.fixture(scope="session")
def toy():
    return toy_spec()


@pytest.fixture(scope="session")
def toy_bundle(tmp_path_factory, toy):
    """The toy module exported to every target this machine can build, once for the session."""
    from exporters.build import export_bundle
    from exporters.registry import TARGETS

    out = tmp_path_factory.mktemp("toy") / "bundle"
    named = [t for t, m in TARGETS.items() if getattr(m, "NOT_IN_ALL", "") and m.is_available()[0]]  # not in `all`
    outcomes = export_bundle(toy, ["all", *named], out, "fp32", {"compute_capabilities": ("8.6",)})
    return out, {o.target: o for o in outcomes}
