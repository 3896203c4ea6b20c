import pytest
import torch

from modelprint import BlackBox, WhiteBox, as_model, make_net
from modelprint.access import hard_labels
from modelprint.errors import AccessError, BudgetExceededError, ConfigError


@pytest.fixture
def white():
    torch.manual_seed(0)
    return WhiteBox(make_net("mlp", (6,), 4), budget=10)


def test_white_box_outputs_and_counter(white):
    x = torch.randn(4, 6)
    assert white.num_classes == 4 and white.input_shape == (6,)
    p = white.probs(x)
    assert p.shape == (4, 4) and torch.allclose(p.sum(1), torch.ones(4))
    assert torch.equal(white.labels(x), p.argmax(1))
    assert white.queries == 8 and white.remaining == 2


def test_budget_is_hard(white):
    white.labels(torch.randn(8, 6))
    with pytest.raises(BudgetExceededError, match="budget of 10"):
        white.labels(torch.randn(3, 6))
    assert white.queries == 8  # a refused batch costs nothing


def test_hard_label_view_hides_probabilities(white):
    labels_only = hard_labels(white)
    assert labels_only.labels(torch.randn(2, 6)).dtype == torch.int64
    with pytest.raises(AccessError, match="hard labels only"):
        labels_only.probs(torch.randn(2, 6))
    assert white.queries == 2  # it spends the underlying model's queries


def test_input_validation(white):
    with pytest.raises(ConfigError, match=r"expected inputs of shape \(N, 6\)"):
        white.labels(torch.randn(2, 5))
    with pytest.raises(ConfigError, match="float tensor"):
        white.labels(torch.zeros(2, 6, dtype=torch.int64))


@pytest.mark.parametrize(
    "fn,output,message",
    [
        (lambda x: torch.full((len(x), 3), float("nan")), "probs", "NaN"),
        (lambda x: torch.ones(len(x), 3), "probs", "sum to 1"),
        (lambda x: torch.zeros(len(x) + 1, dtype=torch.long), "labels", "integer labels"),
        (lambda x: torch.full((len(x),), 7), "labels", "outside"),
        (lambda x: "nope", "labels", "returned str"),
    ],
)
def test_black_box_rejects_malformed_answers(fn, output, message):
    box = BlackBox(fn, output=output, num_classes=3)
    with pytest.raises(AccessError, match=message):
        box.labels(torch.randn(2, 4))
    assert box.queries == 0


def test_as_model():
    net = make_net("mlp", (3,), 2)
    assert isinstance(as_model(net), WhiteBox)
    box = as_model(lambda x: torch.zeros(len(x), dtype=torch.long), num_classes=2)
    assert box.labels(torch.randn(3, 3)).tolist() == [0, 0, 0]
    with pytest.raises(ConfigError):
        as_model(42)
