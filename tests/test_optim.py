"""KerasRMSprop: Keras' update rule (eps inside the square root), resumable from its state dict."""

import math

import pytest
import torch

from lstm_zoo.optim import KerasRMSprop


def test_two_steps_match_the_keras_formula_by_hand():
    param = torch.nn.Parameter(torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64))
    optimizer = KerasRMSprop([param], lr=0.01, rho=0.9, eps=1e-7)
    grads = [torch.tensor([0.1, -2.0, 1e-5], dtype=torch.float64), torch.tensor([0.3, 0.5, -1e-4], dtype=torch.float64)]
    expected, velocity = [0.5, -1.0, 2.0], [0.0, 0.0, 0.0]
    for grad in grads:
        param.grad = grad.clone()
        optimizer.step()
        for k, g in enumerate(grad.tolist()):
            velocity[k] = 0.9 * velocity[k] + 0.1 * g * g
            expected[k] -= 0.01 * g / math.sqrt(velocity[k] + 1e-7)
    assert torch.allclose(param.detach(), torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)


def test_small_gradients_take_smaller_steps_than_torch_rmsprop():
    # the one difference from torch.optim.RMSprop: sqrt(v + eps) instead of sqrt(v) + eps
    keras_param, torch_param = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    keras_param.grad, torch_param.grad = torch.full((1,), 1e-5), torch.full((1,), 1e-5)
    KerasRMSprop([keras_param], lr=1e-3).step()
    torch.optim.RMSprop([torch_param], lr=1e-3, alpha=0.9, eps=1e-7).step()
    assert abs(keras_param.item()) < 0.05 * abs(torch_param.item())
    big_keras, big_torch = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    big_keras.grad, big_torch.grad = torch.ones(1), torch.ones(1)
    KerasRMSprop([big_keras], lr=1e-3).step()
    torch.optim.RMSprop([big_torch], lr=1e-3, alpha=0.9, eps=1e-7).step()
    assert big_keras.item() == pytest.approx(big_torch.item(), rel=1e-5)  # large gradients: the same step


def test_resuming_from_the_state_dict_continues_exactly():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    x, y = torch.randn(16, 4), torch.randn(16, 2)

    def train(model, optimizer, steps):
        for _ in range(steps):
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            optimizer.step()

    resumed = torch.nn.Linear(4, 2)
    resumed.load_state_dict(model.state_dict())
    straight = KerasRMSprop(model.parameters(), lr=1e-2)
    train(model, straight, 6)
    first = KerasRMSprop(resumed.parameters(), lr=1e-2)
    train(resumed, first, 3)
    second = KerasRMSprop(resumed.parameters(), lr=1e-2)
    second.load_state_dict(first.state_dict())
    train(resumed, second, 3)
    for a, b in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_weight_decay_adds_to_the_gradient_and_bad_arguments_are_refused():
    param = torch.nn.Parameter(torch.ones(1))
    param.grad = torch.zeros(1)
    KerasRMSprop([param], lr=0.1, weight_decay=0.5).step()  # gradient 0 + 0.5 * 1
    assert param.item() == pytest.approx(1 - 0.1 * 0.5 / math.sqrt(0.1 * 0.25 + 1e-7))
    with pytest.raises(ValueError, match="rho=1.5"):
        KerasRMSprop([param], rho=1.5)
