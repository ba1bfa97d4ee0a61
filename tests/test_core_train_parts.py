"""The parts of the training loop (train.py), each on its own: the gradient accumulation of one
optimizer step, the removal events of a step, and the checkpointer."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from _tiny import tiny_model
from lnfree_core.checkpoint import read_checkpoint_meta, shared_aliases
from lnfree_core.method.surgery import fakeln_modules, make_removable
from lnfree_core.method.tracking import SigmaTracker
from lnfree_core.train import Checkpointer, accumulate_gradients, apply_removals


class _Feed:
    def __init__(self, batches):
        self.batches, self.epoch, self.pos = list(batches), 0, 0

    def next(self):
        self.pos += 1
        return self.batches.pop(0)


class _Log:
    def __init__(self):
        self.events, self.statuses = [], []

    def event(self, kind, step, **fields):
        self.events.append((kind, step, fields))

    def status(self, state, step, reason=None, checkpointing=False):
        self.statuses.append((state, step, checkpointing))


def _batches(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 127, (2, 16), generator=g) for _ in range(n)]


def test_accumulate_gradients_is_the_mean_loss_gradient_over_micro_batches():
    model = tiny_model().train()
    ref = tiny_model().train()
    xs = _batches(3)
    cfg = SimpleNamespace(dataset="tokens", precision="fp32")
    hp = SimpleNamespace(grad_accum_steps=3, mask_eot_labels=False, aux_weight=0.0)
    sums = accumulate_gradients(model, model, _Feed(xs), cfg, hp, torch.device("cpu"), vocab=128, eot=None,
                                tracker=None, ln_free=False, fsdp=False, world=1, step=1)
    # independent: the mean of the three CE losses, one backward
    losses = [ref(input_ids=x, labels=x, use_cache=False).loss for x in xs]
    (sum(losses) / 3).backward()
    assert abs(float(sums[0]) - float(sum(l.detach() for l in losses))) < 1e-5
    assert float(sums[1]) == 0.0 and float(sums[2]) == 0.0
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6), name


def test_apply_removals_freezes_the_tracked_sigma_and_logs_once():
    model = tiny_model().train()
    make_removable(model)
    tracker = SigmaTracker(model)
    model(input_ids=_batches(1)[0], use_cache=False)
    tracker.commit_micro_batch()
    tracker.end_step()
    block = fakeln_modules(model)["mlp.0"]
    tracked = float(block.sigma_avg)
    log = _Log()
    event = SimpleNamespace(name="mlp.0", block="mlp", layer=0, step=5)
    apply_removals(model, [event], 5, log)
    assert block.is_removed and float(block.sigma) == tracked
    assert log.events == [("removal", 5, {"block": "mlp", "layer": 0, "sigma": tracked})]
    apply_removals(model, [event], 5, log)  # already removed: nothing happens, nothing is logged
    assert len(log.events) == 1


def test_checkpointer_writes_the_data_position_and_says_it_is_checkpointing(tmp_path):
    model = tiny_model().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    log = _Log()
    (tmp_path / "checkpoints").mkdir()
    saver = Checkpointer(tmp_path, model, optimizer, log, rank=0, fsdp=False, ln_free=False,
                         device=torch.device("cpu"), aliases=shared_aliases(model), keep=2)
    saver.save(7, epoch=1, pos=42, tokens=1234, history=[1.0, 2.0])
    ckpts = sorted((tmp_path / "checkpoints").iterdir())
    assert len(ckpts) == 1
    _, state = read_checkpoint_meta(ckpts[0])
    assert (state["step"], state["epoch"], state["pos"], state["tokens"]) == (7, 1, 42, 1234)
    assert state["grad_norm_history"] == [1.0, 2.0]
    assert log.statuses == [("running", 7, True), ("running", 7, False)]
    assert [e[0] for e in log.events] == ["checkpoint"]
    Checkpointer(tmp_path, model, optimizer, None, rank=1, fsdp=False, ln_free=False,  # not rank 0: writes nothing
                 device=torch.device("cpu"), aliases={}, keep=2).save(8, epoch=1, pos=43, tokens=0, history=[])
    assert len(list((tmp_path / "checkpoints").iterdir())) == 1
