"""TrimmedConv2d must give the same outputs and gradients as nn.Conv2d."""
import copy

import pytest
import torch
from torch import nn

from medtl.models import create_model
from medtl.models.fastconv import TrimmedConv2d, _live_taps, trim_dead_taps


@pytest.mark.parametrize("size,k,stride,pad", [
    (1, 3, 1, 1), (2, 3, 2, 1), (2, 3, 1, 1), (1, 7, 2, 3), (3, 3, 2, 1), (4, 7, 2, 3), (5, 3, 1, 1),
    (1, 3, 2, 1), (2, 5, 1, 2), (7, 3, 2, 1), (1, 1, 1, 0),
])
def test_same_output_and_gradients(size, k, stride, pad):
    torch.manual_seed(0)
    ref = nn.Conv2d(6, 5, k, stride=stride, padding=pad, bias=True).double()
    fast = copy.deepcopy(ref)
    fast.__class__ = TrimmedConv2d
    x = torch.randn(4, 6, size, size + 1, dtype=torch.float64, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    y_ref, y_fast = ref(x), fast(x2)
    assert y_ref.shape == y_fast.shape
    torch.testing.assert_close(y_fast, y_ref, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(y_ref)
    y_ref.backward(g)
    y_fast.backward(g)
    torch.testing.assert_close(x2.grad, x.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fast.weight.grad, ref.weight.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fast.bias.grad, ref.bias.grad, rtol=1e-12, atol=1e-12)


def test_live_taps_on_one_pixel_is_the_centre():
    assert _live_taps(1, 3, 1, 1) == (1, 1, 1)
    assert _live_taps(2, 3, 2, 1) == (1, 2, 1)
    assert _live_taps(8, 3, 1, 1) == (0, 2, 8)  # big maps: nothing trimmed


def test_resnet_at_28px_matches_untrimmed(tmp_path):
    torch.manual_seed(0)
    a, _ = create_model("resnet18", 2)
    b = copy.deepcopy(a)
    assert trim_dead_taps(b) == 0  # create_model already trimmed
    for m in a.modules():  # undo on `a` to get the reference
        if type(m) is TrimmedConv2d:
            m.__class__ = nn.Conv2d
    a, b = a.double(), b.double()
    x = torch.rand(3, 1, 28, 28, dtype=torch.float64)
    a.eval(), b.eval()
    torch.testing.assert_close(b(x), a(x), rtol=1e-10, atol=1e-10)
    assert sorted(a.state_dict()) == sorted(b.state_dict())
