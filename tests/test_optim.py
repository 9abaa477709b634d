"""FlatAdam against its oracle (torch's Adam after clipping and an anchor gradient), its state, and start-up cost."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from streamlearn.model import Encoder
from streamlearn.model.optim import FlatAdam


def _loss(encoder: Encoder, step: int) -> torch.Tensor:
    x = torch.from_numpy(np.random.default_rng(step).normal(size=(24, 6)).astype(np.float32))
    return (encoder(x) - 1.0).pow(2).sum()


def _reference_step(encoder, optimizer, anchor, anchor_weight, max_norm, step):
    optimizer.zero_grad()
    _loss(encoder, step).backward()
    with torch.no_grad():
        for name, p in encoder.named_parameters():
            p.grad.add_(p - anchor[name], alpha=2.0 * anchor_weight)
    torch.nn.utils.clip_grad_norm_(encoder.parameters(), max_norm)
    optimizer.step()


@pytest.mark.parametrize("max_norm", [0.5, 1e6])  # clipped on every step, never clipped
def test_flat_adam_follows_torch_adam_with_clipping_and_the_anchor_pull(max_norm):
    torch.manual_seed(0)
    ours, reference = Encoder(6, 16, 4), Encoder(6, 16, 4)
    reference.load_state_dict(ours.state_dict())
    anchor = {k: v + 0.3 for k, v in ours.state_dict().items()}
    flat = FlatAdam(ours, lr=0.01, max_grad_norm=max_norm, anchor=anchor, anchor_weight=0.5)
    adam = torch.optim.Adam(reference.parameters(), lr=0.01)
    for step in range(40):
        flat.zero_grad()
        _loss(ours, step).backward()
        flat.step()
        _reference_step(reference, adam, anchor, 0.5, max_norm, step)
    for (name, p), q in zip(ours.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=name)
    assert float(ours.net[0].weight.detach().sub(anchor["net.0.weight"]).abs().max()) > 0.01  # they did move


def test_the_parameters_share_one_buffer_and_keep_their_values_and_loading_writes_through():
    torch.manual_seed(0)
    encoder = Encoder(6, 16, 4)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    flat = FlatAdam(encoder, lr=0.01)
    for name, value in encoder.state_dict().items():
        torch.testing.assert_close(value, before[name])
    encoder.load_state_dict({k: torch.zeros_like(v) for k, v in before.items()})
    assert float(flat.flat.abs().sum()) == 0.0  # load_state_dict copied into the views


def test_state_round_trip_and_a_torch_adam_state_give_the_same_next_steps():
    torch.manual_seed(0)
    a, b, c = Encoder(6, 16, 4), Encoder(6, 16, 4), Encoder(6, 16, 4)
    b.load_state_dict(a.state_dict())
    c.load_state_dict(a.state_dict())
    flat, adam = FlatAdam(a, lr=0.01), torch.optim.Adam(b.parameters(), lr=0.01)
    for step in range(5):
        for model, opt in ((a, flat), (b, adam)):
            opt.zero_grad()
            _loss(model, step).backward()
            opt.step()
    saved_ours, saved_torch = flat.state_dict(), adam.state_dict()
    resumed = Encoder(6, 16, 4)
    resumed.load_state_dict(a.state_dict())
    from_ours, from_torch = FlatAdam(resumed, lr=0.5), FlatAdam(c, lr=0.5)
    c.load_state_dict(b.state_dict())
    from_ours.load_state_dict(saved_ours)
    from_torch.load_state_dict(saved_torch)
    assert from_ours.lr == from_torch.lr == 0.01 and from_ours.steps == from_torch.steps == 5
    for model, opt in ((a, flat), (resumed, from_ours), (c, from_torch)):
        opt.zero_grad()
        _loss(model, 5).backward()
        opt.step()
    for p, q, r in zip(a.parameters(), resumed.parameters(), c.parameters()):
        torch.testing.assert_close(q, p)
        torch.testing.assert_close(r, p, rtol=1e-4, atol=1e-5)


def test_a_state_for_another_model_is_refused_with_the_parameter_named():
    encoder = Encoder(6, 16, 4)
    flat = FlatAdam(encoder, lr=0.01)
    bad = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(5), "exp_avg_sq": torch.zeros(5)}}}
    with pytest.raises(ValueError, match="parameter 0 has 5 values"):
        flat.load_state_dict(bad)
    with pytest.raises(ValueError, match="parameter 99"):
        flat.load_state_dict({"state": {99: bad["state"][0]}})


def test_learning_loads_no_lazy_torch_modules():
    """torch.optim's Adam imported torch._dynamo (~2-3 s) on a fresh learner's first meta step: the daemon's
    first samples waited for it. A fresh process that learns a few batches must not import it."""
    script = (
        "import sys, numpy as np\n"
        "from streamlearn.learner import Learner\n"
        "rng = np.random.default_rng(0)\n"
        "learner = Learner(seed=0, hidden_dim=16, embedding_dim=8)\n"
        "for _ in range(8):\n"
        "    y = rng.integers(0, 3, 64)\n"
        "    learner.process((rng.normal(size=(64, 5)) + y[:, None]).astype(np.float32), y.tolist())\n"
        "assert learner.meta_updates > 0, learner.meta_updates\n"
        "print(sorted(m for m in sys.modules if m.startswith(('torch._dynamo', 'torch._inductor'))))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
