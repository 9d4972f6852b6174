"""The resume state on its own: what is saved comes back exactly, and a state that does not
belong to the run is refused with how to start afresh."""

import json
import random

import numpy as np
import pytest
import torch
from torch import nn

from medattn.errors import DataError, StoreError
from medattn.runs import store
from medattn.training.resume import Progress, Trainer, flat_tensors, load_resume, save_resume


def _trainer(seed: int) -> Trainer:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 5)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    return Trainer(model, optimizer, scheduler, scaler, torch.device("cpu"))


def _step(t: Trainer) -> None:
    loss = t.model(torch.randn(8, 4)).pow(2).mean()
    t.optimizer.zero_grad()
    loss.backward()
    t.optimizer.step()
    t.scheduler.step()


def _draws() -> tuple:
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]


@pytest.mark.parametrize("best_is_current", [False, True])
def test_saved_state_comes_back_exactly(tmp_path, best_is_current):
    t = _trainer(0)
    _step(t)
    best = flat_tensors("", t.model.state_dict())
    _step(t)
    epoch = 2
    progress = Progress(epoch=epoch, history=[{"epoch": 1}, {"epoch": 2}],
                        best_epoch=epoch if best_is_current else 1, best_bacc=0.75,
                        timings={"train_seconds": 1.5, "sessions": 1})
    torch.manual_seed(7), np.random.seed(7), random.seed(7)
    save_resume(tmp_path, "run-a", "fp1", t, progress,
                flat_tensors("", t.model.state_dict()) if best_is_current else best)
    expected_draws = _draws()
    model_sd = {k: v.clone() for k, v in t.model.state_dict().items()}
    momentum = [t.optimizer.state[p]["momentum_buffer"].clone() for p in t.model.parameters()]
    lr = t.optimizer.param_groups[0]["lr"]

    other = _trainer(1)  # other weights, no optimizer state, scheduler at its start
    torch.manual_seed(99), np.random.seed(99), random.seed(99)
    loaded = load_resume(tmp_path, "run-a", "fp1", other)
    assert loaded is not None
    got, best_state = loaded
    assert got == progress
    assert _draws() == expected_draws
    for k, v in other.model.state_dict().items():
        assert torch.equal(v, model_sd[k]), k
    for p, m in zip(other.model.parameters(), momentum):
        assert torch.equal(other.optimizer.state[p]["momentum_buffer"], m)
    assert other.optimizer.param_groups[0]["lr"] == lr
    assert other.scheduler.last_epoch == t.scheduler.last_epoch == 2
    want_best = model_sd if best_is_current else best
    assert best_state.keys() == want_best.keys()
    assert all(torch.equal(best_state[k], want_best[k]) for k in want_best)
    mirror = json.loads((tmp_path / store.RESUME_JSON).read_text())
    assert mirror["epoch"] == epoch and mirror["best_bacc"] == 0.75


def test_no_state_is_none_and_a_foreign_or_broken_state_is_refused(tmp_path):
    t = _trainer(0)
    assert load_resume(tmp_path, "run-a", "fp1", t) is None
    save_resume(tmp_path, "run-a", "fp1", t, Progress(1, [], 1, 0.5, {}), {})
    with pytest.raises(DataError, match=r"fingerprint fp1 != fp2.*--restart"):
        load_resume(tmp_path, "run-a", "fp2", t)
    with pytest.raises(DataError, match="other data"):
        load_resume(tmp_path, "run-b", "fp1", t)
    path = tmp_path / store.RESUME
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(StoreError, match=r"resume state of run run-a is unreadable.*--restart"):
        load_resume(tmp_path, "run-a", "fp1", t)
