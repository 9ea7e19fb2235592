"""MVoT: nearest code against brute force, discrepancy loss against its definition, modality mask."""
import torch

from neat.config import BOI_ID, EOI_ID, FIRST_CODE_ID, NEG, preset
from neat.mvot import ModalityMask, VisualCodebook, discrepancy_loss


def test_nearest_code_matches_brute_force():
    cfg = preset("tiny")
    book = VisualCodebook(cfg)
    g = torch.Generator().manual_seed(0)
    book.codes.data = torch.rand(cfg.n_codes, cfg.code_dim, generator=g)
    x = torch.rand(50, cfg.code_dim, generator=g)
    brute = [min(range(cfg.n_codes), key=lambda j: float(((x[i] - book.codes[j]) ** 2).sum())) for i in range(50)]
    assert book.nearest(x).tolist() == brute


def test_tokenize_detokenize_round_trip():
    cfg = preset("tiny")
    book = VisualCodebook(cfg)
    book.codes.data = torch.rand(cfg.n_codes, cfg.code_dim, generator=torch.Generator().manual_seed(1))
    ids = torch.randint(FIRST_CODE_ID, FIRST_CODE_ID + cfg.n_codes, (3, cfg.image_tokens))
    images = book.detokenize(ids)
    assert images.shape == (3, cfg.image_grid * cfg.patch_px, cfg.image_grid * cfg.patch_px)
    assert torch.equal(book.tokenize(images), ids)
    assert torch.equal(book.patches_to_image(book.image_to_patches(images)), images)


def test_discrepancy_loss_matches_definition():
    g = torch.Generator().manual_seed(2)
    codes = torch.randn(6, 4, generator=g)
    logits = torch.randn(5, 6, generator=g)
    target = torch.tensor([0, 3, 5, 3, 1])
    want = 0.0
    for n in range(5):
        p = torch.softmax(logits[n], -1)
        want += sum(float(torch.dist(codes[target[n]], codes[j])) * float(p[j]) for j in range(6))
    assert abs(float(discrepancy_loss(logits, target, codes)) - want / 5) < 1e-5


def plain_modes(tokens, n_img):
    """Allowed next-token class after each token of a well-formed stream: 'text', 'code' or 'eoi'."""
    inside, n, out = False, 0, []
    for tok in tokens:
        if tok == BOI_ID:
            inside, n = True, 0
        elif tok == EOI_ID:
            inside = False
        elif tok >= FIRST_CODE_ID:
            n += 1
        out.append("text" if not inside else ("eoi" if n >= n_img else "code"))
    return out


def test_modality_mask_follows_the_spans_across_chunks():
    cfg = preset("tiny")
    mask = ModalityMask(cfg)
    G2 = cfg.image_tokens
    span = [BOI_ID] + [FIRST_CODE_ID + i % cfg.n_codes for i in range(G2)] + [EOI_ID]
    stream = list(b"a map: ") + span + list(b"\nand ") + span + list(b"!!")
    stream += [32] * (-len(stream) % 10)
    tokens = torch.tensor([stream], dtype=torch.int32)
    state, parts = torch.zeros(1, 2), []
    for c in range(0, len(stream), 10):  # chunk boundaries fall inside the spans
        bias, state = mask(tokens[:, c:c + 10], state)
        parts.append(bias)
    bias = torch.cat(parts, 1)[0]
    for t, mode in enumerate(plain_modes(stream, G2)):
        allowed = (bias[t] == 0).nonzero().flatten().tolist()
        if mode == "text":
            assert allowed == [i for i in range(FIRST_CODE_ID) if i != EOI_ID]
        elif mode == "code":
            assert allowed == list(range(FIRST_CODE_ID, cfg.vocab_size))
        else:
            assert allowed == [EOI_ID]
        assert torch.all((bias[t] == 0) | (bias[t] == NEG))
