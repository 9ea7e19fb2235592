"""Benchmarks of the model, the exporters and the artifacts; not part of what an application embeds.

`neat bench` is `run`: it measures (`bench`, with `timing`, `coldstart`, `roofline` and `generation`),
judges (`gate`) and renders (`report`); `regression` runs it against the committed baseline in `results/`.
`eager_latency`, `export_times` and `long_stream` are standalone scripts (`python -m benchmarks.NAME`).
This package may import neat, exporters and runtimes; runtimes imports none of them.
"""
