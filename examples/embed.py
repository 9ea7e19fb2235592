"""Embedding a NEAT bundle in an application through the `runtimes` API only (no model code imported).

    neat export all                      # once, anywhere: writes ./neat-bundle
    python examples/embed.py neat-bundle "The module provides "
"""
import sys

import numpy as np

import runtimes


def main(bundle: str, prompt: str) -> None:
    session = runtimes.load(bundle)              # the best artifact for this machine, with fallback
    print(f"backend: {session.backend}", file=sys.stderr)

    # 1. generation, streamed
    for piece in session.stream(prompt.encode(), max_new_bytes=120):
        sys.stdout.write(piece.decode("utf-8", errors="replace"))
        sys.stdout.flush()
    print()

    # 2. one chunk at a time, carrying the state yourself (e.g. to score a long document)
    T = session.manifest.signature["inputs"][0]["shape"][1]
    data = np.frombuffer((prompt * 100).encode()[: 2 * T], np.uint8).astype(np.int32).reshape(1, 2, T)
    state = session.new_state(batch=1)
    for c in range(2):
        logits, state = session.run(data[:, c], state)
    print(f"logits of the last chunk: {logits.shape}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "neat-bundle", sys.argv[2] if len(sys.argv) > 2 else "The module provides ")
