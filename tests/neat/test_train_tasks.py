"""A task no Transformer² expert owns (key-value recall) trains beside the experts' tasks: its rows carry no
dispatch label and stay out of the dispatch loss, the others keep theirs."""
import numpy as np
import torch

from neat import NeatModel, preset
from neat.data import recall_stream, text_stream
from neat.train import StreamBatch, sequence_loss


def test_recall_rows_train_without_a_dispatch_label():
    torch.manual_seed(0)
    cfg = preset("micro")
    streams = {"prose": text_stream("prose", False), "recall": recall_stream(20_000, 3, held_out=False)}
    batch = StreamBatch(streams, ("prose", "recall"), np.random.default_rng(0), 4, cfg.chunk_len, experts=cfg.experts)
    tokens, fresh, labels = batch.next(1)
    assert labels.tolist() == [0, -1, 0, -1] and fresh.all()
    assert bytes(tokens[1, :4].numpy().astype(np.uint8)) == b"let "  # a recall row starts at an episode
    model = NeatModel(cfg)
    loss, figures, _ = sequence_loss(model, tokens, labels)
    assert torch.isfinite(loss)
    loss.backward()
    assert model.dispatch.head.weight.grad.abs().sum() > 0  # the labelled rows still train the dispatch head
    only_recall = sequence_loss(model, tokens[1::2], labels[1::2])[0]  # no labelled row: cross-entropy alone
    assert torch.isfinite(only_recall)
