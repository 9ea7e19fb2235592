"""The one-call API as a new user meets it: options checked by name, nested and keyword example inputs
flattened into named inputs, and errors that say what to write (in Python, or on the command line)."""
import numpy as np
import pytest
import torch
from torch import nn

import exporters
from exporters.errors import CaptureError, SpecError
from foreign import DictOutputs, GRUStep, IndexSelect
from foreign_state import Erfinv


class Nested(nn.Module):
    """forward takes a tensor, a pair, a dict, a keyword tensor and two constants (a str mode, an int flag)."""

    def forward(self, x, pair, d, *, scale, mode="add", flag=0):
        y = x + pair[0] * pair[1] if mode == "add" else x - pair[0]
        return y * scale + d["key"].sum(-1, keepdim=True) + flag


def nested_example():
    x, a, b, k, s = torch.randn(2, 3), torch.randn(2, 3), torch.randn(2, 3), torch.randn(2, 4), torch.randn(2, 1)
    return (x, (a, b), {"key": k}), {"scale": s, "mode": "sub", "flag": 2}


def test_a_misspelled_option_names_the_closest_valid_one():
    with pytest.raises(SpecError, match=r"batchs=: did you mean batch=\?.*unbatched") as info:
        exporters.export(DictOutputs(), (torch.randn(2, 6),), batchs=(1, 2), out="never-written")
    assert "targets" in str(info.value)  # export's own options are listed too
    with pytest.raises(SpecError, match="output_name=: did you mean output_names="):
        exporters.describe(DictOutputs(), (torch.randn(2, 6),), output_name=["a"])


def test_batch_errors_name_the_python_keyword_or_the_cli_flag():
    import click
    from click.testing import CliRunner

    from neat.cli import NeatGroup

    with pytest.raises(SpecError, match=r"batch=\(3, 2\).*batch=\(2, 3\)"):
        exporters.describe(DictOutputs(), (torch.randn(2, 6),), batch=(3, 2))

    class DataDependent(nn.Module):
        def forward(self, x):
            return x[: int(x.sum() > 0) + 1]  # a shape that depends on the values: not capturable dynamic

    spec = exporters.describe(DataDependent(), (torch.ones(2, 3),), batch=(2, 4))
    from exporters.capture import capture
    with pytest.raises(CaptureError) as info:
        capture(spec)
    assert "batch=(4, 4)" in str(info.value) and "--batch" not in str(info.value)

    @click.group(cls=NeatGroup)
    @click.option("--debug", is_flag=True)
    def cli(debug):
        pass

    @cli.command()
    def export():
        raise info.value  # the same library error, met through the `neat` command

    result = CliRunner().invoke(cli, ["export"])
    assert result.exit_code == 1 and "--batch 4:4" in result.output and "batch=(" not in result.output


def test_unbatched_names_and_positions_are_checked():
    x, cols = torch.randn(3, 10), torch.tensor([0, 7, 3])
    with pytest.raises(SpecError, match=r"\['col'\] name no input; the inputs are \['x', 'cols'\]"):
        exporters.describe(IndexSelect(), (x, cols), unbatched=["col"])
    with pytest.raises(SpecError, match=r"\[2\] name no input"):
        exporters.describe(IndexSelect(), (x, cols), unbatched=[2])
    assert not exporters.describe(IndexSelect(), (x, cols), unbatched=[1]).inputs[1].batched


def test_an_output_named_like_an_input_is_refused_by_describe():
    with pytest.raises(SpecError, match=r"\['x'\] name both an input and an output: pass output_names="):
        exporters.describe(IndexSelect(), (torch.randn(3, 10), torch.tensor([0, 7, 3])), unbatched=["cols"],
                           output_names=["x"])
    with pytest.raises(SpecError, match=r"\['new_h'\] name both"):  # a new state is an output too
        exporters.describe(GRUStep(), (torch.randn(2, 4, 5), torch.zeros(2, 7)), state=["h"],
                           input_names=["new_h", "h"])


def test_export_failed_does_not_point_at_a_bundle_it_did_not_write(tmp_path):
    out = tmp_path / "b"
    with pytest.raises(exporters.ExportFailed) as info:  # ONNX has no erfinv: the only target fails
        exporters.export(Erfinv(), (torch.randn(2, 5),), targets=["onnx"], out=out)
    assert f"nothing was written to {out}" in str(info.value) and "passing ones" not in str(info.value)
    assert not out.exists()


def test_a_dict_as_example_inputs_says_to_use_example_kwargs():
    with pytest.raises(SpecError, match=r"example_inputs is a dict \(keys 'x'\): .*example_kwargs="):
        exporters.describe(DictOutputs(), {"x": torch.randn(2, 6)})


def test_nested_and_keyword_inputs_are_flattened_by_name_with_constants_baked_in():
    args, kwargs = nested_example()
    spec = exporters.describe(Nested(), args, example_kwargs=kwargs, batch=(1, 3))
    assert [(t.name, t.shape) for t in spec.inputs] == [
        ("x", (3,)), ("pair_0", (3,)), ("pair_1", (3,)), ("d_key", (4,)), ("scale", (1,))]
    assert spec.info["constant_inputs"] == {"mode": "sub", "flag": 2}
    with torch.no_grad():
        want = Nested()(*args, **kwargs)
        torch.testing.assert_close(spec.module(*spec.examples)[0], want)


def test_nested_inputs_export_and_the_session_takes_them_by_name(tmp_path):
    from runtimes import load
    from runtimes.bundle import read_manifest
    from runtimes.errors import InputError

    args, kwargs = nested_example()
    result = exporters.export(Nested(), args, example_kwargs=kwargs, batch=(1, 3), targets=["exported", "onnx"],
                              out=tmp_path / "nested")
    assert result.ok, str(result)
    assert read_manifest(tmp_path / "nested").model["constant_inputs"] == {"mode": "sub", "flag": 2}
    session = load(tmp_path / "nested", backend="onnx")
    x, (a, b), d = args
    named = {"x": x, "pair_0": a, "pair_1": b, "d_key": d["key"], "scale": kwargs["scale"]}
    (y,), _ = session.call(**{k: v.numpy() for k, v in reversed(named.items())})
    with torch.no_grad():
        np.testing.assert_allclose(y, Nested()(*args, **kwargs).numpy(), atol=1e-5)
    with pytest.raises(InputError, match=r"no input 'pair'.*pair_0"):
        session.call(pair=a.numpy())


def test_a_0d_input_stays_0d_through_every_runner(tmp_path):
    class AddScalar(nn.Module):  # torch's export example assume_constant_result takes its y like this
        def forward(self, x, y):
            return x[:2] + y

    result = exporters.export(AddScalar(), (torch.randn(3, 2), torch.tensor(4)), targets=["exported", "onnx"],
                              out=tmp_path / "b", check=False)
    assert result.ok, str(result)


def test_a_python_number_output_is_a_0d_tensor(tmp_path):
    class WithWidth(nn.Module):  # torch's export example scalar_output returns x.shape[1] + 1 like this
        def forward(self, x):
            return x * 2, x.shape[1] + 1

    result = exporters.export(WithWidth(), (torch.randn(2, 3),), batch=(1, 3), targets=["exported", "onnx"],
                              out=tmp_path / "b")
    assert [(t.name, t.dtype, t.shape, t.batched) for t in result.spec.outputs][1] == ("output_1", "int64", (), False)
