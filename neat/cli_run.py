"""`neat info`, `neat run` and `neat bench`: the commands that load bundles (runtimes), added to neat.cli's
group there. Thin, as there: parse options, call one library function, print the result."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from neat.deploy import DEFAULT_BUNDLE, RUN_SAMPLING

MAX_GENERATE_BYTES = 256 * 1024  # neat bench steps through held-out prose after its 1 KB prompt (305 KB of it)

TRUST_UNSIGNED = click.option("--trust-unsigned", is_flag=True, help="Also load the code-bearing artifacts (cpu, "
                              "cuda, tensorrt) of a bundle not signed by a trusted key (see `neat sign`).")

THREADS = click.option("--threads", type=click.IntRange(1, 1024), default=None,
                       help="Intra-op threads for every call (default: OMP_NUM_THREADS when set, else 1 for decode "
                            "steps and a quarter of the usable cores, 1 to 4, for chunks: see `neat info`).")


def _set_quiet(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    from neat.progress import set_quiet

    set_quiet(value)
    return value


QUIET = click.option("--quiet", "-q", is_flag=True, expose_value=False, callback=_set_quiet,
                     help="No progress on stderr (start and end lines, heartbeats, live display); results still print.")


@click.command("info")
@click.argument("bundle", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the profile and ranking as JSON.")
@TRUST_UNSIGNED
def info_command(bundle: Path | None, as_json: bool, trust_unsigned: bool) -> None:
    """Show this machine's hardware profile and, for a BUNDLE, which artifact would run here and why
    each other one would or would not."""
    from runtimes import measured
    from runtimes.bundle import read_manifest
    from runtimes.profile import detect
    from runtimes.select import rank
    from runtimes.threads import plan
    from runtimes.trust import UNSIGNED, screen

    profile, manifest, threads = detect(), read_manifest(bundle) if bundle else None, plan()
    ranking, basis = rank(manifest, profile, bundle) if bundle else [], "the static preference order"
    if bundle:
        screen(ranking, bundle, manifest, UNSIGNED if trust_unsigned else None)
        if measured.wanted(None, profile.kind):
            order = measured.cached(ranking, measured.fingerprint(profile, manifest, threads))
            ranking, basis = (order, "measured here (cached figures)") if order is not None else (ranking, (
                "the static order: runtimes.load measures the usable CPU artifacts once (about 2 s) and may "
                "pick another"))
    chosen = next((c for c in ranking if c.usable and c.preferred), None)
    if as_json:
        click.echo(json.dumps({"profile": profile.to_dict(), "threads": threads.__dict__,
                               "chosen": chosen.key if chosen else None, "pick": basis,
                               "ranking": [c.__dict__ for c in ranking]}, indent=2))
        return
    from neat.report import info_view, show

    show(info_view(profile, bundle, ranking, chosen))
    click.echo(f"threads: {threads.chunk} for a chunk, {threads.step} for a decode step ({threads.why})")
    if bundle:
        click.echo(f"pick: {basis}")


@click.command("run")
@click.argument("bundle", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_BUNDLE)
@click.option("--prompt", help="Text to continue (passed on byte for byte, UTF-8 or not).")
@click.option("--prompt-file", type=click.File("rb"),
              help="Read the prompt from this file instead, as bytes ('-': standard input); any length.")
@click.option("--max-bytes", default=200, show_default=True, type=click.IntRange(0), help="Bytes to generate at most.")
@click.option("--backend", help="Force an artifact (e.g. onnx-fp32), a target (onnx) or eager.")
@click.option("--temperature", default=None, type=click.FloatRange(0.0),
              help=f"Sampling temperature; 0 is greedy. [default: {RUN_SAMPLING['temperature']}]")
@click.option("--top-k", default=None, type=click.IntRange(0),
              help=f"Sample from the k most likely tokens (0: all). [default: {RUN_SAMPLING['top_k']}]")
@click.option("--greedy", is_flag=True,
              help="Take the most likely byte every time instead of sampling: the same output on every fp32 "
                   "artifact and every run (this model then tends to repeat itself).")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0),
              help="The sampler's seed: the same seed, prompt and artifact give the same text; change it for "
                   "another sample.")
@click.option("--autotune", is_flag=True, default=None,
              help="Time every usable artifact (the eager reference too) and use the fastest. Without it, the usable "
                   "CPU artifacts of a CPU machine are timed once per machine and bundle (NEAT_PICK=static: the "
                   "fixed preference order).")
@click.option("--compare", is_flag=True,
              help="Generate greedily through every artifact that runs here and report where each first "
                   "differs from the eager reference (fp16 and int8 artifacts may).")
@click.option("--images", type=click.Path(file_okay=False, path_type=Path), default=Path("neat-images"),
              show_default=True, help="Where generated images are saved as PNG.")
@THREADS
@TRUST_UNSIGNED
@QUIET
def run_command(bundle, prompt, prompt_file, max_bytes, backend, temperature, top_k, greedy, seed, autotune, compare,
                images, threads, trust_unsigned) -> None:
    """Generate text from a bundle with the best artifact for this machine, streamed to stdout.
    The backend used is reported on stderr; generated images are saved as PNG and their paths printed.

    It samples by default, at the temperature and top-k that gave the shipped model's best text (measured:
    the samples' bits per byte under the model and their repeated-8-gram share, benchmarks/sampling.py and
    benchmarks/results/sampling.json); greedy decoding loops on this small model ("to the string to the
    string ..."). --greedy gives the reproducible most-likely output. The Python API (Session.generate,
    Session.stream) stays greedy unless given a temperature."""
    import runtimes
    from neat.deploy import run_sampling
    from runtimes.images import save_png
    from runtimes.trust import UNSIGNED, unsigned_allowed

    temperature, top_k = run_sampling(greedy, temperature, top_k)

    if (prompt is None) == (prompt_file is None):
        raise click.UsageError("give the prompt as --prompt TEXT or --prompt-file FILE (one of them)")
    # the argument's own bytes, also when not UTF-8
    prompt = prompt_file.read() if prompt_file else prompt.encode("utf-8", "surrogateescape")
    if compare:
        from benchmarks.generation import compare_generation
        from neat.progress import timed_step
        from neat.report import generation_table, show

        with unsigned_allowed(trust_unsigned), timed_step("compare every artifact's generation") as progress:
            rows = compare_generation(bundle, prompt, max_bytes, threads, report=progress.doing)
        show([generation_table(rows, max_bytes)])
        return

    session = runtimes.load(bundle, backend=backend, autotune=autotune, trust=UNSIGNED if trust_unsigned else None,
                            threads=threads)
    click.echo(f"backend: {session.backend}", err=True)
    click.echo(f"threads: {session.threads.chunk} per chunk, {session.threads.step} per step ({session.threads.why})",
               err=True)
    from neat.report import image_note, images_note

    saved, uniform = [], []

    def on_image(img):
        saved.append(save_png(images / f"image-{len(saved) + 1}.png", img))
        line, flat = image_note(saved[-1], img, session.tokens)
        uniform.append(flat)
        click.echo("\n" + line, err=True)

    out, n, t0, first = sys.stdout.buffer, 0, time.perf_counter(), None
    for piece in session.stream(prompt, max_bytes, temperature, top_k, seed, on_image=on_image):
        first = first or time.perf_counter()
        n += len(piece)
        out.write(piece)
        out.flush()
    out.write(b"\n")
    out.flush()
    from neat.report import generation_speed

    click.echo(generation_speed(n, t0, first, time.perf_counter(), session.decoding), err=True)
    if sum(uniform):
        click.echo(images_note(len(saved), sum(uniform), session.tokens), err=True)


@click.command("bench")
@click.argument("bundle", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--runs", default=50, show_default=True, type=click.IntRange(1),
              help="Timed runs per artifact at batch 1 after warm-up (rounded up to a multiple of the 10 rounds).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Write the full record.")
@click.option("--markdown", "md_out", type=click.Path(dir_okay=False, path_type=Path), help="Write a Markdown table.")
@click.option("--plot", "plot_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a PNG: latency and speed ratio per artifact (matplotlib).")
@click.option("--baseline", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="A stored --json record: exit non-zero on a regression against it.")
@click.option("--max-regression", default=10.0, show_default=True,
              help="Allowed drop of an artifact's speed ratio to eager, in percent, before --baseline fails.")
@click.option("--no-cold-start", is_flag=True,
              help="Skip the fresh-process measurements: each artifact's cold start and torch.compile's first "
                   "call (70 s on 2 quiet cores, 115 s busy: README, \"How long things take\").")
@click.option("--no-torch-compile", is_flag=True,
              help="Leave out torch.compile: its steady-state row (the reference compiled, timed like the "
                   "artifacts) and its first call (70 s quiet, 115 s busy, on 2 cores).")
@click.option("--generate-bytes", default=1024, show_default=True, type=click.IntRange(0, MAX_GENERATE_BYTES),
              help="Bytes each artifact generates after a 1 KB held-out prompt, once by decode steps and once by "
                   "recomputing the partial chunk, stepping through the held-out text that follows the prompt (real "
                   "text's mix of patch starts; the ids compared are the argmax at each byte), at most 256 KB. 0: "
                   "skip the generation figures; they add about 2 minutes on 2 busy cores.")
@click.option("--record", "record_in", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Measure nothing: show, write and gate this stored --json record instead (e.g. a CI run's, "
                   "against a new --baseline). Takes no BUNDLE.")
@click.option("--load", "load_profile", metavar="PROFILE[,PROFILE...]|all",
              help="Measure every CPU artifact at each thread setting idle, then again with the machine kept busy, "
                   "side by side (workers: other processes of the same app; mixed: an Inductor compile, the smallest "
                   "mix that reproduces the collapse of threads on a busy machine; crowded: the compile and a NumPy "
                   "job; heavy: those and a PyTorch job on every core; all: each in turn, one record), with the share "
                   "of a core each received. The jobs stop by themselves. Replaces the full benchmark.")
@TRUST_UNSIGNED
@QUIET
def bench_command(bundle, runs, json_out, md_out, plot_out, baseline, max_regression, no_cold_start,
                  no_torch_compile, generate_bytes, record_in, load_profile, trust_unsigned) -> None:
    """Measure the eager reference and every artifact of BUNDLE that runs here, in one run: parity,
    bits per byte on held-out text, greedy generation equality, load and cold-start time, latency
    percentiles, throughput, peak memory, speed as a ratio to eager, the share of this machine's measured
    limit (matmul rate, memory bandwidth) each reaches, generation speed (time to first byte, per-byte
    p50/p99, bytes/s by decode steps beside the recompute path, the share of the per-byte limit), and
    torch.compile (steady state, and its first call) for comparison.
    With no BUNDLE, the default bundle (exported first if it does not exist)."""
    from benchmarks.run import run
    from runtimes.trust import unsigned_allowed

    if generate_bytes == 1:
        raise click.BadParameter("give 0 (no generation figures) or at least 2 bytes: per-byte latency is the time "
                                 "between two generated bytes", param_hint="--generate-bytes")
    if record_in is not None and bundle is not None:
        raise click.UsageError("give a BUNDLE to measure or --record to show a stored record, not both")
    if load_profile:
        if record_in is not None or baseline is not None or plot_out is not None:
            raise click.UsageError("--load measures on its own: give no --record, --baseline or --plot with it")
        from benchmarks.loaded import measure_profiles, parse_profiles
        from neat.deploy import default_bundle
        from neat.progress import timed_step

        try:
            profiles = parse_profiles(load_profile)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--load") from None
        with unsigned_allowed(trust_unsigned):
            bundle = bundle or default_bundle()
            with timed_step(f"load study ({', '.join(profiles)})") as progress:
                record, text = measure_profiles(bundle, profiles, runs, generate_bytes, progress=progress.doing)
        click.echo(text)
        if json_out:
            Path(json_out).write_text(json.dumps(record, indent=1) + "\n")
        if md_out:
            Path(md_out).write_text(text)
        return
    with unsigned_allowed(trust_unsigned):  # the benchmark's own processes too
        run(bundle, runs, not no_cold_start, json_out, md_out, plot_out, baseline, max_regression, generate_bytes,
            record_in, not no_torch_compile)


@click.command("serve")
@click.argument("bundle", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_BUNDLE)
@click.option("--replicas", type=click.IntRange(1, 1024), default=1, show_default=True,
              help="Ray Serve replicas; each loads its own Session (the artifact runtimes.load picks on its machine).")
@click.option("--threads", type=click.IntRange(1, 1024), default=None,
              help="Intra-op threads of each replica's Session, and the CPUs Ray reserves for it (default: the "
                   "runtimes' thread policy, 1 CPU reserved).")
@click.option("--max-concurrent", type=click.IntRange(1, 100000), default=8, show_default=True,
              help="Requests one replica works on at once (Ray Serve max_ongoing_requests); more wait in Ray's queue.")
@click.option("--max-batch", type=click.IntRange(1, 100000), default=None,
              help="Rows of one batched /chunk forward: concurrent /chunk requests arriving within --batch-wait-ms "
                   "are stacked into one Session.run (the same answers, up to float rounding). Default: the "
                   "artifact's batch max (its manifest's dynamic batch) where that pays: each replica times its "
                   "forward at batch 1 and at the max when it starts, and batches if the max costs under 60% of "
                   "that many forwards of one (a GPU, typically; not a CPU, where a forward's cost grows with its "
                   "rows). N forces batches of up to N rows (at most the artifact's max); 1 turns batching off; off "
                   "anyway where the artifact is batch-1 only. Give --max-concurrent at least N, or batches never "
                   "fill.")
@click.option("--batch-wait-ms", type=click.FloatRange(0, 10000), default=5.0, show_default=True,
              help="How long the first /chunk request of a batch waits for others: latency a lone request pays "
                   "for throughput under load.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True, help="HTTP port.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on: loopback by default; 0.0.0.0 accepts other machines.")
@click.option("--address", default=None,
              help="A Ray cluster to join (e.g. auto, or ray://HOST:10001); default: start a local Ray instance. "
                   "The bundle must be at the same path on every node.")
@click.option("--backend", default=None, help="Force an artifact, e.g. onnx-fp32 (default: each replica's best).")
@TRUST_UNSIGNED
def serve_command(bundle: Path, replicas: int, threads: int | None, max_concurrent: int, max_batch: int | None,
                  batch_wait_ms: float, port: int, host: str, address: str | None, backend: str | None,
                  trust_unsigned: bool) -> None:
    """Serve BUNDLE over HTTP on Ray Serve (pip install "neat-deploy[serve]"), until Ctrl-C.

    POST /generate and /stream take {"prompt": "...", "max_new_bytes": 200, "temperature": 0, "top_k": 0,
    "seed": 0}; /generate answers with the generated bytes when done, /stream sends them as they come
    (chunked HTTP). POST /chunk takes {"tokens": [[...]], "state": null or the previous answer's state} and
    answers {"logits": ..., "state": ...}: the client keeps the state, so any replica serves any request;
    concurrent /chunk requests are batched into one forward where the artifact takes batch > 1.
    Bad input is answered 400 with the reason."""
    from runtimes.serve import ServeSettings, start

    settings = ServeSettings(replicas=replicas, threads=threads, max_concurrent=max_concurrent, host=host, port=port,
                             backend=backend, trust_unsigned=trust_unsigned, max_batch=max_batch,
                             batch_wait_ms=batch_wait_ms)
    url = start(bundle, settings, address=address, echo=click.echo)
    click.echo(f"serving {bundle} at {url} (POST /generate, /stream, /chunk); Ctrl-C stops it")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        from ray import serve

        serve.shutdown()
