"""benchmarks.export_times: each artifact's verification seconds count its methods' checks and its decode stream."""


def test_checks_after_an_artifacts_build_are_its_own():
    from benchmarks.export_times import Steps

    s = Steps()
    for label in ("capture tiny with torch.export", "exported-fp32: build"):
        with s.timer(label):
            pass
    for label, seconds in [("exported-fp32: verify against the reference", 2.0), ("  method step: build", 1.0),
                           ("  method step: verify", 0.5), ("  decode: step through a long stream", 3.0)]:
        s.done(label, seconds)
    with s.timer("onnx-fp32: build"):
        pass
    s.done("onnx-fp32: verify against the reference", 1.0)
    s.done("  method step: verify", 0.25)
    assert s.checks == {"exported-fp32": 5.5, "onnx-fp32": 1.25}  # builds not counted; each key its own checks
    assert set(s.steps) >= {"capture tiny with torch.export", "exported-fp32:  method step: build",
                            "exported-fp32:  method step: verify", "onnx-fp32:  method step: verify"}
