"""FLOP counting through `torch.utils.flop_counter.FlopCounterMode`, with one correction.

torch's formula for `aten.convolution_backward` (torch <= 2.13) charges the input gradient
of a grouped convolution as if groups were 1, so AlexNet's groups=2 layers would report a
backward of 3x their forward instead of 2x (fixed upstream in pytorch/pytorch#183405). For
a non-transposed conv, the input gradient and the weight gradient each cost exactly one
forward; we register that. Everything else is torch's own count (2 FLOPs per multiply-add).
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode, conv_backward_flop, conv_flop_count


def _conv_backward_flop(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation,
                        transposed, _output_padding, _groups, output_mask, out_shape=None, **kwargs):
    if transposed:
        return conv_backward_flop(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation,
                                  transposed, _output_padding, _groups, output_mask, out_shape)
    forward = conv_flop_count(list(x_shape), list(w_shape), list(grad_out_shape), transposed=False)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))




def flop_counter(**kwargs) -> FlopCounterMode:
    """A FlopCounterMode (display off, all depths) with grouped conv backward counted right."""
    kwargs.setdefault("display", False)
    kwargs.setdefault("depth", None)
    mapping = {torch.ops.aten.convolution_backward: _conv_backward_flop, **kwargs.pop("custom_mapping", {})}
    return FlopCounterMode(custom_mapping=mapping, **kwargs)


def unit_flops(model, input_shape, names, *, train: bool = True) -> dict[str, tuple[float, float]]:
    """{name: (forward FLOPs, backward FLOPs)} for the named submodules of `model` ("" for
    the whole net), counted
    on a torch-backend twin on the meta device (Triton kernels are invisible to the counter).
    Backward is counted from the loss of a training forward (no input gradient for the net's
    own input, as in training)."""
    from .layers import convert

    twin = convert(model, "torch").to("meta")
    twin.train(train)
    counter = flop_counter()
    prefix = type(twin).__name__
    # the input in the parameters' dtype: a bf16/fp16 net refuses a float32 input
    dtype = next((p.dtype for p in twin.parameters() if p.is_floating_point()), torch.get_default_dtype())
    with counter:
        out = twin(torch.empty(*input_shape, device="meta", dtype=dtype))
        forward = {k: sum(v.values()) for k, v in counter.get_flop_counts().items()}
        if train:
            logits = out[0] if isinstance(out, tuple) else out
            logits.float().sum().backward()
    total = {k: sum(v.values()) for k, v in counter.get_flop_counts().items()}
    result = {}
    for name in names:
        key = f"{prefix}.{name}" if name else prefix  # "" names the whole net
        fwd = forward.get(key, 0)
        result[name] = (float(fwd), float(total.get(key, 0) - fwd))
    return result
