"""`--cuda-graphs`: a whole training step (or forward) captured once and replayed.

On the CPU: the refusals, and that a step which cannot be captured becomes a row with its
error under backend `<backend>+graph` while the eager rows stand. On a GPU (`gpu` marker):
replaying the captured step trains exactly as the eager step does, on both net backends."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from benchmarks import graphs, measure, profile
from nets import recipe
from reports.schema import NETWORK
from tests.helpers import profiler_run


def _run(monkeypatch) -> measure.Run:
    return profiler_run(monkeypatch, ms=4.0, p20=3.9, p80=4.1, batch=4, cuda_graphs=True)


def test_capture_refuses_a_cpu_device_and_no_warmup():
    with pytest.raises(ValueError, match="--cuda-graphs needs a CUDA device, got cpu"):
        graphs.capture(lambda: None, torch.device("cpu"))
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="warmup must be >= 1"):
            graphs.capture(lambda: None, torch.device("cuda"), warmup=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_cli_refuses_cuda_graphs_without_a_gpu(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        profile.parse_args(["--cuda-graphs", "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "--cuda-graphs needs a CUDA device" in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["train", "infer"])
def test_a_step_that_cannot_be_captured_is_a_row_beside_the_eager_ones(mode, monkeypatch):
    run = _run(monkeypatch)  # on the CPU, capture itself refuses: the failure path
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 10))
    x, y = torch.randn(4, 3, 2, 2), torch.tensor([0, 1, 2, 3])
    entry = measure.profile_network(run, "alexnet", "torch", mode, model, x, y, (1e9, 2e9))
    assert entry["status"] == "ok" and entry["images_per_s"] == pytest.approx(1000.0)  # the eager step stands
    graph = entry["graph"]
    assert graph["backend"] == "torch+graph" and graph["status"] == "failed" and graph["images_per_s"] is None
    (row,) = [r for r in run.store.results.rows if r["backend"] == "torch+graph"]
    assert row["layer"] == NETWORK and row["pass"] == measure.main_pass(mode) and row["status"] == "failed"
    assert "needs a CUDA device" in row["error"]


def test_summary_lists_the_graph_entry_after_its_backend(monkeypatch):
    run = _run(monkeypatch)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 10))
    x, y = torch.randn(4, 3, 2, 2), torch.tensor([0, 1, 2, 3])
    monkeypatch.setattr(measure, "_models", lambda arch, mode, backends, run: ({"torch": model}, None))
    monkeypatch.setattr(measure, "unit_flops", lambda *a, **k: {"": (1e9, 2e9)})
    monkeypatch.setattr(measure, "units", lambda m: [])
    monkeypatch.setattr(measure.data, "synthetic_batch", lambda *a, **k: (x, y))
    run.args.backend, run.args.skip_layers = ["torch"], True
    summary = {"backends": []}
    measure.profile_arch(run, "alexnet", "train", summary)
    assert [e["backend"] for e in summary["backends"]] == ["torch", "torch+graph"]


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_replayed_steps_train_as_eager_steps(backend):
    """Three replays of the captured step leave the weights, BatchNorm running stats and
    momentum where three eager steps leave a copy of the same net (dropout off: no RNG)."""
    import nets

    torch.manual_seed(0)
    device = torch.device("cuda")
    model = nets.build("resnet18", backend=backend).to(device).to(memory_format=torch.channels_last)
    eager = copy.deepcopy(model)
    x = torch.randn(8, 3, 64, 64, device=device).to(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (8,), device=device)
    opt, opt_e = recipe.optimizer(model, "resnet18", batch_size=8), recipe.optimizer(eager, "resnet18", batch_size=8)
    replay, _ = graphs.capture(lambda: recipe.train_step(model, opt, x, y), device, warmup=1)
    recipe.train_step(eager, opt_e, x, y)  # the warm-up step (capture records, it does not run)
    for _ in range(3):
        replay()
        recipe.train_step(eager, opt_e, x, y)
    torch.cuda.synchronize()
    for (name, a), b in zip(model.state_dict().items(), eager.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")
