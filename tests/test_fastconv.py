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
    _assert_same_outputs_and_gradients(ref, fast, torch.randn(4, 6, size, size + 1, dtype=torch.float64))


def _assert_same_outputs_and_gradients(ref, fast, x):
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    y_ref, y_fast = ref(x1), fast(x2)
    assert y_ref.shape == y_fast.shape
    torch.testing.assert_close(y_fast, y_ref, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(y_ref)
    y_ref.backward(g)
    y_fast.backward(g)
    torch.testing.assert_close(x2.grad, x1.grad, rtol=1e-12, atol=1e-12)
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


@pytest.mark.parametrize("h,w,k,stride,pad,channels_last", [
    (2, 2, 3, 1, 1, True), (2, 2, 3, 1, 1, False), (1, 1, 3, 1, 1, True), (2, 2, 3, 2, 1, True),
    (1, 2, 3, 1, 1, False), (2, 1, 5, 1, 2, True),
])
def test_dense_path_on_tiny_maps_is_exact(h, w, k, stride, pad, channels_last, monkeypatch):
    """Maps where every output sees every input go through one GEMM; same numbers."""
    import medtl.models.fastconv as fc

    calls = []
    real = fc._dense_conv
    monkeypatch.setattr(fc, "_dense_conv", lambda *a: calls.append(1) or real(*a))
    torch.manual_seed(1)
    ref = nn.Conv2d(6, 5, k, stride=stride, padding=pad, bias=True).double()
    fast = copy.deepcopy(ref)
    fast.__class__ = TrimmedConv2d
    x = torch.randn(3, 6, h, w, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    _assert_same_outputs_and_gradients(ref, fast, x)
    assert calls, "dense path not taken"


def test_dense_path_skipped_where_it_would_hold_zero_blocks():
    from medtl.models.fastconv import _dense_taps

    assert _dense_taps(2, 2, 3, 3, 1, 1, 1, 1) is not None  # 2x2 map, 3x3 kernel: all connected
    assert _dense_taps(4, 4, 3, 3, 2, 2, 1, 1) is None  # 16 positions: the conv is cheaper
    assert _dense_taps(3, 1, 3, 3, 1, 1, 1, 1) is None  # row 0 and row 2 never meet


def test_dense_path_under_bf16_autocast_close_to_conv():
    torch.manual_seed(2)
    ref = nn.Conv2d(32, 16, 3, padding=1, bias=False)
    fast = copy.deepcopy(ref)
    fast.__class__ = TrimmedConv2d
    x = torch.randn(8, 32, 2, 2).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a, b = ref(x), fast(x)
    assert b.dtype == a.dtype == torch.bfloat16
    torch.testing.assert_close(b.float(), a.float(), rtol=0.02, atol=0.05)
