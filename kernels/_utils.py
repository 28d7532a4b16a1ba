"""Host-side checks shared by every kernel launcher: device, dtype, shapes, index width.

Each check raises ValueError/TypeError naming the argument and its shape, so a bad call
never reaches a Triton compile error or a silent wrong answer. `first_order` guards every
autograd.Function's backward the same way against a gradient of a gradient.
"""

from __future__ import annotations

import functools

import torch

from .configs import cuda_index, interpreting

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
INT32_MAX = 2**31 - 1


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) of host ints: `triton.cdiv`'s answer without its cost as a constexpr
    function (about 1.5 us a call on the host, several calls per launch)."""
    return -(-a // b)


def next_pow2(n: int) -> int:
    """The least power of two >= n (0 for n <= 0): `triton.next_power_of_2`'s answer, at a
    plain function's cost."""
    return 0 if n <= 0 else 1 << (n - 1).bit_length()


def first_order(backward):
    """Decorates an `autograd.Function`'s backward, whose gradients come from Triton kernels
    and so carry no graph: under create_graph=True (a gradient of a gradient: gradient
    penalties, Hessian-vector products, gradgradcheck) it raises instead of returning
    gradients whose second-order terms through this op would silently be missing.

    Raised when the backward runs, not when its result is differentiated: a node that raised
    later (torch's `once_differentiable`) is skipped by `torch.autograd.grad(loss, inputs)`
    when its edges do not lead to `inputs`, and torch's first-order gradient of a conv depends
    on the weight even where no incoming gradient requires grad (L = y.sum())."""

    @functools.wraps(backward)
    def wrapper(ctx, *grads):
        if torch.is_grad_enabled():  # the engine enables grad mode exactly for create_graph=True
            op = type(ctx).__name__.removesuffix("Backward")
            raise NotImplementedError(
                f"{op}: double backward (a gradient taken with create_graph=True) is not supported: the backward "
                "pass runs Triton kernels whose results carry no graph, so second-order terms through this op "
                "would be missing; take first-order gradients without create_graph")
        return backward(ctx, *grads)

    return wrapper


def describe(t: torch.Tensor) -> str:
    return f"shape {tuple(t.shape)}, {t.dtype}, {t.device}"


def check_float_tensor(t, name: str, *, ndim: int | tuple[int, ...] | None = None) -> None:
    """`t` must be a floating tensor of a supported dtype (and rank) on a runnable device.

    `meta` tensors pass anywhere: the launchers return meta results of the right shape
    without launching (shape inference and tracing)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32, float16, bfloat16 or float64, got {t.dtype} ({describe(t)})")
    if ndim is not None:
        dims = (ndim,) if isinstance(ndim, int) else ndim
        if t.dim() not in dims:
            raise ValueError(f"{name} must have {' or '.join(map(str, dims))} dimensions, got {describe(t)}")
    if t.device.type not in ("cuda", "meta") and not interpreting():
        raise ValueError(
            f"{name} is on {t.device}: Triton kernels need a CUDA tensor, or the interpreter "
            "(TRITON_INTERPRET=1 set before importing kernels) for CPU tensors"
        )
    if t.dtype == torch.bfloat16 and interpreting():
        raise TypeError(f"{name}: bfloat16 is not supported by the Triton interpreter ({describe(t)})")


def check_same(ref: torch.Tensor, ref_name: str, other: torch.Tensor, name: str) -> None:
    """`other` must share `ref`'s device and dtype."""
    if other.device != ref.device:
        raise ValueError(f"{name} is on {other.device} but {ref_name} is on {ref.device}")
    if other.dtype != ref.dtype:
        raise TypeError(f"{name} has dtype {other.dtype} but {ref_name} has {ref.dtype}")


def no_launch(*tensors: torch.Tensor | None) -> bool:
    """True when a launch has nothing to do: a tensor is `meta` (shapes only) or empty."""
    return any(t is not None and (t.is_meta or t.numel() == 0) for t in tensors)


def needs_int64(*tensors: torch.Tensor | None) -> bool:
    """True when any tensor spans more than 2**31 elements (including its storage offset)."""
    for t in tensors:
        if t is None or t.untyped_storage().nbytes() <= INT32_MAX:  # no view of it spans more
            continue
        span = t.storage_offset() + sum((s - 1) * abs(st) for s, st in zip(t.shape, t.stride())) + 1
        if t.numel() and span > INT32_MAX:
            return True
    return False


def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of `device` (1 off the GPU): how many programs fill it."""
    if device.type != "cuda":
        return 1
    return _cuda_sm_count(cuda_index(device))


@functools.cache
def _cuda_sm_count(index: int) -> int:  # asked at launches; a device's count never changes
    return torch.cuda.get_device_properties(index).multi_processor_count


def dot_precision(dtype: torch.dtype) -> str:
    """The `tl.dot` input precision for a conv on `dtype`.

    torch's rule for convolutions: fp32 inputs use TF32 exactly when
    `torch.backends.cudnn.allow_tf32` is True (its default), IEEE fp32 otherwise. Half
    types always use the tensor cores and ignore the setting. float64 is never rounded:
    its dot runs in IEEE fp64 (DMMA on sm_80+), accumulating in fp64.
    """
    if dtype == torch.float64 or (dtype == torch.float32 and not torch.backends.cudnn.allow_tf32):
        return "ieee"
    return "tf32"


def pair(v, name: str) -> tuple[int, int]:
    """An int, a pair of ints or one int in a tuple/list (torch's functionals expand it to
    both dims) -> a pair of non-negative ints."""
    one = v[0] if isinstance(v, (tuple, list)) and len(v) == 1 else v
    if isinstance(one, int) and not isinstance(one, bool):
        out = (one, one)
    elif isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(i, int) for i in v):
        out = (int(v[0]), int(v[1]))
    else:
        raise TypeError(f"{name} must be an int or a pair of ints, got {v!r}")
    if min(out) < 0:
        raise ValueError(f"{name} must be non-negative, got {v!r}")
    return out


def memory_format(t: torch.Tensor) -> torch.memory_format:
    """channels_last(_3d) when channels are innermost in memory, else contiguous_format."""
    if t.dim() in (4, 5) and t.stride(1) == 1 and t.shape[1] > 1:
        return torch.channels_last if t.dim() == 4 else torch.channels_last_3d
    return torch.contiguous_format


def dense(t: torch.Tensor) -> torch.Tensor:
    """`t` if it is dense (NCHW or channels-innermost), else a dense copy in its nearer format."""
    fmt = memory_format(t)
    return t if t.is_contiguous(memory_format=fmt) or t.is_contiguous() else t.contiguous(memory_format=fmt)


def dense_like(t: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """`t` laid out exactly like the dense tensor `ref`, whatever its dim order (a copy only
    when it is not): flat kernels pair the two element by element in memory order."""
    if t.stride() == ref.stride():
        return t
    return torch.empty_like(ref).copy_(t)


def non_overlapping_and_dense(t: torch.Tensor) -> bool:
    """True when `t`'s elements fill a block of memory exactly once, in any dim order."""
    expected = 1
    for stride, size in sorted((st, sz) for sz, st in zip(t.shape, t.stride()) if sz != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def check_writable(t: torch.Tensor, name: str) -> None:
    """An in-place output must not repeat a memory location (torch's internal-overlap rule:
    a stride-0 dim of size > 1 is refused, other layouts are allowed)."""
    if any(sz > 1 and st == 0 for sz, st in zip(t.shape, t.stride())):
        raise ValueError(f"unsupported operation: more than one element of the written-to tensor {name} refers "
                         f"to a single memory location (strides {t.stride()}, {describe(t)}); clone() it first")


def check_no_partial_overlap(out: torch.Tensor, out_name: str, src: torch.Tensor, src_name: str) -> None:
    """An in-place output and an input may be the same memory (same start, end and strides)
    or disjoint, not partly the same: torch's partial-overlap rule, which it applies when
    both are non-overlapping and dense (other layouts it cannot decide and allows)."""
    if out.numel() == 0 or src.numel() == 0 or out.device != src.device or out.is_meta:
        return
    if not (non_overlapping_and_dense(out) and non_overlapping_and_dense(src)):
        return
    if out.untyped_storage().data_ptr() != src.untyped_storage().data_ptr():
        return
    a0, b0 = out.data_ptr(), src.data_ptr()
    a1, b1 = a0 + out.numel() * out.element_size(), b0 + src.numel() * src.element_size()
    full = a0 == b0 and a1 == b1 and out.stride() == src.stride()
    if not full and a0 < b1 and b0 < a1:
        raise ValueError(f"unsupported operation: some elements of {src_name} and of the written-to tensor "
                         f"{out_name} refer to a single memory location ({src_name} {describe(src)}, strides "
                         f"{src.stride()}; {out_name} strides {out.stride()}); clone() {src_name} first")
