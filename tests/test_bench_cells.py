"""scripts/bench_cells.py's profile: what explains a missed speed target, from a real torch.profiler run."""

import importlib.util
from pathlib import Path

import torch

from lstm_zoo.models import RNNForecaster, SLSTMForecaster

spec = importlib.util.spec_from_file_location("bench_cells", Path(__file__).parents[1] / "scripts" / "bench_cells.py")
bench_cells = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_cells)


def test_profile_counts_the_per_step_calls_of_a_recurrence_that_is_not_one_kernel():
    torch.manual_seed(0)
    batches = [(torch.rand(4, 12, 1), torch.rand(4, 1)) for _ in range(3)]
    shape = {"hidden_size": 8, "num_layers": 2, "dropout": 0.0, "window": 12}
    lstm = bench_cells.profile_ops(RNNForecaster(**shape), batches)
    slstm = bench_cells.profile_ops(SLSTMForecaster(num_heads=2, **shape), batches)
    for found in (lstm, slstm):
        assert found["calls_per_batch"] > 0 and 1 <= len(found["top"]) <= 5
        shares = [share for _, share in found["top"]]
        assert all(name.startswith("aten::") for name, _ in found["top"])
        assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1 + 1e-9
    # nn.LSTM runs each layer's 12 steps inside one kernel; sLSTM launches a handful of ops per step and layer
    assert slstm["calls_per_batch"] > 5 * lstm["calls_per_batch"]
    assert bench_cells.format_top([["aten::mul", 0.114], ["aten::bmm", 0.07]]) == "mul 11%, bmm 7%"
