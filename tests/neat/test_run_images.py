"""`neat run --images`: what the shipped model draws, and how uniform images are reported."""
import numpy as np
import pytest
import torch

PROMPT = b"map:\n.A.#\n..H.\nK..D\n...G\ndraw: "
MAP = ".A.#..H.K..D...G"


@pytest.fixture(scope="module")
def model():
    from neat.checkpoint import load_checkpoint

    return load_checkpoint().eval()


def cell_codes(model, cells: str) -> list[int]:
    """The codebook code nearest to each cell type's icon."""
    from neat.data import CELL_CHARS, _cell_patterns

    icons = torch.as_tensor(_cell_patterns(model.cfg.patch_px)).reshape(len(CELL_CHARS), -1)
    return model.codebook.nearest(icons)[[CELL_CHARS.index(c) for c in cells]].tolist()


def test_the_shipped_model_draws_the_map_it_is_given(model):
    """The first image of the README's grid prompt is that map, cell for cell (greedy, the decode step)."""
    from neat.config import BOI_ID, EOI_ID, FIRST_CODE_ID
    from neat.step import DecodeStep

    step, out = DecodeStep(model).eval(), []
    with torch.no_grad():
        state = step.step_state(1)
        for tok in list(PROMPT) + [None] * 18:
            if tok is None:
                tok = int(logits[0, -1].argmax())
                out.append(tok)
            logits, *state = step(torch.tensor([[tok]], dtype=torch.int32), *state)
    assert out[0] == BOI_ID and out[-1] == EOI_ID
    assert [t - FIRST_CODE_ID for t in out[1:-1]] == cell_codes(model, MAP)


def test_uniform_images_are_named_as_such(model):
    from neat.export_spec import token_layout
    from neat.report import image_note, images_note
    from runtimes.generate import decode_image

    tokens = token_layout(model)
    drawn = decode_image(tokens, cell_codes(model, MAP))
    line, flat = image_note("a.png", drawn, tokens)
    assert not flat and "16 cells, 7 kinds" in line  # . A # H K D G
    empty = decode_image(tokens, cell_codes(model, "." * 16))
    assert np.ptp(empty) < 0.01  # an empty map is one flat grey: what looked like a blank PNG
    line, flat = image_note("b.png", empty, tokens)
    assert flat and "uniform" in line and "empty map" in line
    assert "--max-bytes 18" in images_note(4, 3, tokens) and images_note(4, 0, tokens) == ""
