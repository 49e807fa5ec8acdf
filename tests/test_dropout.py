"""FastDropout: the same distribution and gradients as inverted dropout, with a cheaper CPU mask."""

import pytest
import torch

from lstm_zoo.models.dropout import FastDropout, fast_dropout


def test_identity_in_eval_mode_and_at_p_zero():
    x = torch.randn(8, 60, 50)
    layer = FastDropout(0.2).eval()
    assert layer(x) is x
    assert fast_dropout(x, 0.0, training=True) is x


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_every_element_position_is_dropped_with_probability_p(p):
    # one 64-bit draw feeds four 16-bit lanes: each lane position must be dropped at rate p, not only on average
    torch.manual_seed(0)
    out = fast_dropout(torch.ones(20_000, 64), p)
    dropped = (out == 0).float()
    per_lane = dropped.view(20_000, 16, 4).mean(dim=(0, 1))
    assert torch.allclose(per_lane, torch.full((4,), p), atol=0.01), per_lane
    assert abs(dropped.mean().item() - p) < 0.005


def test_kept_values_are_scaled_so_the_expectation_is_unchanged():
    torch.manual_seed(1)
    out = fast_dropout(torch.ones(200_000), 0.2)
    kept = out[out != 0]
    drop_rate = round(0.2 * 65536) / 65536
    assert torch.allclose(kept, torch.full_like(kept, 1 / (1 - drop_rate)))
    assert abs(out.mean().item() - 1.0) < 0.01


def test_gradient_is_the_mask_times_the_scale():
    torch.manual_seed(2)
    x = torch.randn(32, 60, 50, requires_grad=True)
    out = fast_dropout(x, 0.2)
    out.sum().backward()
    scale = (out / x.detach())[out != 0]
    assert torch.allclose(scale, torch.full_like(scale, 1.25), atol=1e-4)
    assert torch.equal(x.grad == 0, out == 0)
    assert torch.allclose(x.grad[out != 0], torch.full_like(scale, 1.25), atol=1e-4)


def test_seeded_masks_repeat_and_odd_shapes_work():
    x = torch.randn(3, 5, 7)  # 105 elements: not a multiple of the four lanes of one draw
    torch.manual_seed(3)
    first = fast_dropout(x, 0.3)
    torch.manual_seed(3)
    assert torch.equal(first, fast_dropout(x, 0.3))
    assert first.shape == x.shape


def test_p_close_to_one_still_uses_the_lanes_and_keeps_the_expectation():
    torch.manual_seed(4)
    out = fast_dropout(torch.ones(400_000), 0.999)
    kept = out[out != 0]
    drop_lanes = round(0.999 * 65536)
    assert abs((out == 0).float().mean().item() - drop_lanes / 65536) < 0.0005
    assert torch.allclose(kept, torch.full_like(kept, 65536 / (65536 - drop_lanes)))


def test_inplace_writes_into_the_input_and_bad_p_is_refused():
    torch.manual_seed(5)
    x = torch.ones(64, 50)
    out = FastDropout(0.5, inplace=True)(x)
    assert out.data_ptr() == x.data_ptr() and (x == 0).any() and (x == 2).any()
    with pytest.raises(ValueError, match="p=-0.1"):
        fast_dropout(torch.ones(4), -0.1)
