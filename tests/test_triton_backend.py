"""The triton backend runs our kernels, and no torch convolution, LRN, BatchNorm, max-pool
or Inception path.

A net's training forward and backward run under a dispatch-level recorder of aten ops and a
recorder of Triton kernel launches (tests/helpers.py). Checked:
- no aten op of a torch convolution (convolution, its backward, cudnn / mkldnn / slow_conv,
  im2col), of torch's LRN (F.local_response_norm's avg_pool3d), BatchNorm (native /
  cudnn batch_norm), max-pool (max_pool2d, with indices, its backward) or of the torch
  Inception path (its stride-1 max-pool before the pool projection) runs, forward or backward;
- every conv, LRN, BatchNorm (+ReLU, +residual), max-pool, add+ReLU module and Inception
  block the net calls launches its Triton kernel during that call; each pair of the net's
  FUSED_PAIRS runs as one fused kernel (LRN + max-pool either order, the stem's BatchNorm +
  ReLU + max-pool) in the module that does the work, and its pass-through partner launches
  nothing;
- backward launches one data-grad and one weight-grad GEMM per forward GEMM (a 1x1
  stride-1 conv's on the 1x1 GEMM path, forced here, the rest on the generic kernels), one LRN
  backward per LRN forward (a max-pool + LRN's backward runs the plain LRN backward), one
  max-pool gather per max-pool forward (plain, pool + LRN, BatchNorm + ReLU + pool), one
  fused LRN + max-pool backward per forward, and per training BatchNorm one statistics pass
  forward and one reduction and one dx pass backward; every parameter gets a gradient.

AlexNet runs its kernels for real on the interpreter. The other nets record the launches
without running them (outputs stay uninitialized): what is checked is where each layer
dispatches, and the interpreter's arithmetic for GoogLeNet and ResNet would cost minutes;
their numbers are checked by the kernel tests and tests/test_nets.py. The same checks on the
torch backend, and on a triton model that `convert` did not (fully) swap, must fail: the
negative controls below.
"""

from __future__ import annotations

import copy
import re
from collections import Counter
from contextlib import ExitStack

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import kernels
import nets
import nets.layers
from kernels import race
from nets import recipe
from nets.googlenet import Inception
from tests.helpers import LaunchRecorder

# aten ops that only a torch convolution, LRN, BatchNorm, max-pool or im2col path would run.
# ... or torch's ReLU (and its backward) and dropout.
FORBIDDEN_OPS = re.compile(r"conv|cudnn|mkldnn|miopen|im2col|col2im|avg_pool3d|batch_norm|max_pool"
                           r"|relu|threshold_backward|dropout|bernoulli")


class OpRecorder(TorchDispatchMode):
    """Counts every aten op (forward and autograd's backward) and notes stride-1 max-pools."""

    def __init__(self):
        super().__init__()
        self.ops: Counter = Counter()
        self.stride1_pools = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        self.ops[name] += 1
        if name in ("aten.max_pool2d", "aten.max_pool2d_with_indices"):
            kernel, stride = list(args[1]), list(args[2]) if len(args) > 2 else []
            if (stride or kernel) in ([1], [1, 1]):
                self.stride1_pools += 1
        return func(*args, **(kwargs or {}))


PASS_THROUGH = "(nothing: fused into its partner)"
# A frozenset: any one of these (the LRN launcher picks its kernels by the input's layout).
LRN_FORWARD = frozenset({"_lrn_fwd_kernel", "_lrn_groups_fwd_kernel"})
LRN_BACKWARD = ("_lrn_bwd_kernel", "_lrn_groups_bwd_kernel")


def _one_by_one(conv: nn.Conv2d) -> bool:
    """A conv the 1x1 GEMM path serves."""
    return (conv.kernel_size, conv.stride, conv.groups) == ((1, 1), (1, 1), 1) and conv.padding in ((0, 0), "valid")


def _forward_kernel(module: nn.Module) -> str | tuple | frozenset | None:
    """The Triton kernel a module of the triton backend must launch in its forward (a
    tuple: each of them; a frozenset: one of them; PASS_THROUGH: the first module of a
    fused pair, which must launch nothing)."""
    if isinstance(module, nets.layers._PassThrough):
        return PASS_THROUGH
    if isinstance(module, Inception):
        return "_pointwise_fwd_kernel"
    if isinstance(module, kernels.ConvBatchNorm2d):
        # the conv (with the statistics epilogue, or the 1x1 GEMM path forced below and a
        # statistics pass over its output), then the BN
        return ("_conv1x1_fwd_kernel", "_bn_stats_kernel", "_bn_fwd_kernel") if _one_by_one(module.conv) \
            else ("_conv_fwd_kernel", "_bn_fwd_kernel")
    if isinstance(module, (kernels.Linear, kernels.Dropout)):
        return "_fc_epilogue_fwd_kernel"
    if isinstance(module, nn.Conv2d):
        return "_conv1x1_fwd_kernel" if _one_by_one(module) else "_conv_fwd_kernel"  # the 1x1 GEMM path (forced below)
    if isinstance(module, nets.layers.TritonLRNMaxPool2d):
        return "_lrn_pool_fwd_kernel"
    if isinstance(module, nets.layers.TritonMaxPool2dLRN):
        return "_pool_lrn_fwd_kernel"
    if isinstance(module, kernels.BatchNormReLUMaxPool2d):
        return "_bn_relu_pool_fwd_kernel"
    if isinstance(module, nn.BatchNorm2d):
        return "_bn_fwd_kernel"
    if isinstance(module, nn.MaxPool2d):
        return "_max_pool_fwd_kernel"
    if isinstance(module, nn.LocalResponseNorm):
        return LRN_FORWARD
    if isinstance(module, (nets.layers.TorchAddReLU, kernels.AddReLU)):
        return "_add_relu_fwd_kernel"
    return None


def dispatch_problems(model: nn.Module, image_size: int, batch: int, device, *, execute: bool) -> list[str]:
    """Run one training forward + backward of `model` on `device` and list every way it
    strays from our kernels (empty when the whole net ran on them)."""
    torch.manual_seed(0)
    model = model.to(device)
    x = torch.randn(batch, 3, image_size, image_size, device=device, requires_grad=True)
    target = torch.randint(0, 10, (batch,), device=device)
    inception_parts = {id(m) for block in model.modules() if isinstance(block, Inception)
                       for m in block.modules() if m is not block}
    # Every module that must launch a kernel, except an Inception block's branch modules
    # (the fused block uses their parameters without calling them).
    expected = {name for name, m in model.named_modules()
                if _forward_kernel(m) is not None and id(m) not in inception_parts}
    problems, starts, called = [], {}, set()

    def before(name):
        starts[name] = len(rec.launches)

    def after(module, name):
        called.add(name)
        want = _forward_kernel(module)
        launched = len(rec.launches) - starts[name]
        if want == PASS_THROUGH:
            if launched:
                problems.append(f"{name} ({type(module).__name__}) is fused into {module.fused_into} but launched "
                                f"{launched} kernels")
        elif isinstance(want, frozenset):
            if not any(rec.names(starts[name])[kernel] for kernel in want):
                problems.append(f"{name} ({type(module).__name__}) launched no {' or '.join(sorted(want))}")
        else:
            for kernel in want if isinstance(want, tuple) else (want,):
                if rec.names(starts[name])[kernel] == 0:
                    problems.append(f"{name} ({type(module).__name__}) launched no {kernel}")

    handles = []
    for name, m in model.named_modules():
        if _forward_kernel(m) is not None:
            handles.append(m.register_forward_pre_hook(lambda mod, args, name=name: before(name)))
            handles.append(m.register_forward_hook(lambda mod, args, out, name=name: after(mod, name)))
    # A 1x1 stride-1 conv takes its dedicated GEMM path, forced: a timed race between the two
    # paths (a GPU without a tuned record) would launch both, and the recorder count its runs.
    paths = ExitStack()
    for site in race.SITES:
        paths.enter_context(race.forced_path(site, "gemm1x1"))
    try:
        with paths, LaunchRecorder(execute=execute) as rec, OpRecorder() as rec_ops:
            out = model(x)
            n_forward = len(rec.launches)
            recipe.loss(out, target).backward()
    finally:
        for h in handles:
            h.remove()
    fwd, bwd = rec.names(0) - rec.names(n_forward), rec.names(n_forward)

    problems += [f"{op} ran {n}x" for op, n in sorted(rec_ops.ops.items()) if FORBIDDEN_OPS.search(op)]
    if rec_ops.stride1_pools:
        problems.append(f"{rec_ops.stride1_pools} stride-1 max-pools ran in torch (the torch Inception path)")
    problems += [f"{name} was never called" for name in sorted(expected - called)]
    for first, second in getattr(model, "FUSED_PAIRS", ()):
        kinds = {_forward_kernel(model.get_submodule(n)) for n in (first, second)}
        if PASS_THROUGH not in kinds:
            problems.append(f"{first} -> {second} ran unfused ({', '.join(sorted(map(str, kinds)))})")
    gemms = fwd["_conv_fwd_kernel"] + fwd["_conv1x1_fwd_kernel"] + fwd["_pointwise_fwd_kernel"]
    for kernels_ in (("_conv_dgrad_kernel", "_conv1x1_dgrad_kernel"), ("_conv_wgrad_kernel", "_conv1x1_wgrad_kernel")):
        launched = sum(bwd[k] for k in kernels_)
        if launched != gemms:
            problems.append(f"backward launched {' + '.join(kernels_)} {launched}x for {gemms} forward GEMMs")
    # backward kernel -> the forward kernels each of whose launches needs exactly one of it
    per_forward = {
        LRN_BACKWARD: (*sorted(LRN_FORWARD), "_pool_lrn_fwd_kernel"),  # either LRN backward
        "_lrn_pool_bwd_kernel": ("_lrn_pool_fwd_kernel",),
        "_max_pool_bwd_kernel": ("_max_pool_fwd_kernel", "_pool_lrn_fwd_kernel", "_bn_relu_pool_fwd_kernel"),
        "_bn_bwd_reduce_kernel": ("_bn_fwd_kernel", "_bn_relu_pool_fwd_kernel"),  # training: every BatchNorm
        "_bn_bwd_dx_kernel": ("_bn_fwd_kernel", "_bn_relu_pool_fwd_kernel"),
    }
    for kernel, forwards in per_forward.items():
        want = sum(fwd[f] for f in forwards)
        got = sum(bwd[k] for k in kernel) if isinstance(kernel, tuple) else bwd[kernel]
        if got != want:
            name = " + ".join(kernel) if isinstance(kernel, tuple) else kernel
            problems.append(f"backward launched {name} {got}x for {want} forwards ({', '.join(forwards)})")
    bn_forwards = fwd["_bn_fwd_kernel"] + fwd["_bn_relu_pool_fwd_kernel"]
    # a BatchNorm fused with its conv takes the conv's statistics: no statistics pass of its own
    # unless its conv ran the 1x1 GEMM path (no epilogue: one pass over that conv's output)
    fused = [m for m in model.modules() if isinstance(m, kernels.ConvBatchNorm2d)]
    with_conv = sum(not _one_by_one(m.conv) for m in fused)
    if fwd["_bn_stats_kernel"] != bn_forwards - with_conv:
        problems.append(f"forward launched _bn_stats_kernel {fwd['_bn_stats_kernel']}x for {bn_forwards} "
                        f"training BatchNorms, {with_conv} of them with their conv's statistics epilogue")
    if fwd["_bn_finalize_kernel"] != bn_forwards:
        problems.append(f"forward launched _bn_finalize_kernel {fwd['_bn_finalize_kernel']}x for {bn_forwards} "
                        f"training BatchNorms")
    if bwd["_fc_epilogue_bwd_kernel"] != fwd["_fc_epilogue_fwd_kernel"]:  # every one has a ReLU or dropout
        problems.append(f"backward launched _fc_epilogue_bwd_kernel {bwd['_fc_epilogue_bwd_kernel']}x for "
                        f"{fwd['_fc_epilogue_fwd_kernel']} FC epilogues")
    if bwd["_relu_grad_kernel"] < fwd["_add_relu_fwd_kernel"]:
        problems.append(f"backward launched _relu_grad_kernel {bwd['_relu_grad_kernel']}x "
                        f"for {fwd['_add_relu_fwd_kernel']} add+ReLU forwards")
    problems += [f"{name} got no gradient" for name, p in model.named_parameters() if p.grad is None]
    return problems


# (arch, image size, batch, run the kernels for real): the smallest inputs each net takes in
# training (GoogLeNet's aux heads need 14x14 at 4a, hence 224; ResNet's BatchNorm needs
# more than one value per channel at layer4, hence batch 2).
NETS = {
    "alexnet": (63, 1, True),
    "googlenet": (224, 1, False),
    "resnet18": (32, 2, False),
    "resnet50": (32, 2, False),
}


def _triton_model(arch: str, how: str) -> nn.Module:
    if how == "build":
        model = nets.build(arch, "triton", num_classes=10)
    else:
        model = nets.layers.convert(nets.build(arch, "torch", num_classes=10), "triton")
    return model.train()


@pytest.mark.parametrize("how", ["convert", "build"])
@pytest.mark.parametrize("arch", sorted(NETS))
def test_triton_backend_runs_only_our_kernels(arch, how, device):
    size, batch, execute = NETS[arch]
    if execute and how == "build":
        execute = False  # one real interpreter run per net is enough (the convert path)
    problems = dispatch_problems(_triton_model(arch, how), size, batch, device, execute=execute)
    assert not problems, f"{arch} ({how}) strays from our kernels:\n" + "\n".join(problems)


# The paths beside the generic kernel, forced at every site: a net's layers they serve reach
# them, in its forward and backward (recorded, not run: the kernels' own tests check values).
# The stems take the space-to-depth path (forward: the image and the filter re-laid out;
# weight-grad: the image again, the filter's grad folded back; the image takes no data-grad),
# GoogLeNet's stride-1 3x3 / 5x5 convs the TMA KxK path: conv3 and the nine blocks' two
# branches (every one of them at the interpreter's patches), each pass.
S2D = ({"_space_to_depth_kernel": 2}, {"_space_to_depth_kernel": 1, "_depth_to_space_kernel": 1})


@pytest.mark.parametrize("arch, path, forward, backward", [
    ("alexnet", "s2d", *S2D),
    ("resnet50", "s2d", *S2D),
    ("googlenet", "tma_kxk", {"_conv_tma_fwd_kernel": 19},
     {"_conv_tma_dgrad_kernel": 19, "_conv_tma_wgrad_kernel": 19}),
])
def test_nets_reach_the_paths_beside_the_generic_kernel(arch, path, forward, backward, device):
    size, batch, _ = NETS[arch]
    model = _triton_model(arch, "build").to(device)
    x = torch.randn(batch, 3, size, size, device=device)
    target = torch.randint(0, 10, (batch,), device=device)
    with ExitStack() as paths:
        for site in race.SITES:
            paths.enter_context(race.forced_path(site, path))
        with LaunchRecorder(execute=False) as rec:
            out = model(x)
            n_forward = len(rec.launches)
            recipe.loss(out, target).backward()
    fwd, bwd = rec.names(0) - rec.names(n_forward), rec.names(n_forward)
    path_kernels = ("_space_to_depth_kernel", "_depth_to_space_kernel", "_conv_tma_fwd_kernel",
                    "_conv_tma_dgrad_kernel", "_conv_tma_wgrad_kernel")
    assert {k: n for k, n in fwd.items() if k in path_kernels} == forward
    assert {k: n for k, n in bwd.items() if k in path_kernels} == backward


# --------------------------------------------------------------------------- negative controls
@pytest.mark.parametrize("arch, must_see", [
    ("alexnet", ["aten.convolution ran", "aten.convolution_backward ran", "aten.avg_pool3d ran",
                 "aten.max_pool2d_with_indices ran", "aten.max_pool2d_with_indices_backward ran",
                 "features.norm1 (LocalResponseNorm) launched no _lrn_fwd_kernel",
                 "features.pool5 (MaxPool2d) launched no _max_pool_fwd_kernel",
                 "features.norm2 -> features.pool2 ran unfused"]),
    ("googlenet", ["aten.convolution ran", "stride-1 max-pools ran in torch",
                   "inception3a (Inception) launched no _pointwise_fwd_kernel",
                   "maxpool1 -> norm1 ran unfused"]),
    ("resnet18", ["aten.convolution_backward ran", "aten.native_batch_norm ran",
                  "aten.native_batch_norm_backward ran",
                  "layer1.0.bn2 (TorchBatchNorm2d) launched no _bn_fwd_kernel",
                  "maxpool (MaxPool2d) launched no _max_pool_fwd_kernel", "bn1 -> maxpool ran unfused"]),
])
def test_the_check_sees_the_torch_backend(arch, must_see, device):
    size, batch, _ = NETS[arch]
    problems = dispatch_problems(nets.build(arch, "torch", num_classes=10).train(), size, batch, device,
                                 execute=False)
    text = "\n".join(problems)
    for words in must_see:
        assert words in text, f"the check missed {words!r} on the torch backend; it found:\n{text}"


def _swap_nothing(model, backend):
    return copy.deepcopy(model)


@pytest.mark.parametrize("arch, patch, must_see", [
    # convert() that swaps no module: every layer stays on torch.
    ("googlenet", lambda mp: mp.setattr(nets.layers, "convert", _swap_nothing),
     ["aten.convolution ran", "aten.avg_pool3d ran", "stride-1 max-pools ran"]),
    # convert() that forgets one layer kind: the max-pool (AlexNet's pool5 is in no fused
    # pair), or the BatchNorm of the residual blocks (the stem's is fused regardless).
    ("alexnet", lambda mp: mp.setattr(nets.layers, "_PAIRS", [p for p in nets.layers._PAIRS
                                                               if p[0] is not nn.MaxPool2d]),
     ["aten.max_pool2d_with_indices ran", "aten.max_pool2d_with_indices_backward ran",
      "features.pool5 (MaxPool2d) launched no _max_pool_fwd_kernel"]),
    ("resnet18", lambda mp: mp.setattr(nets.layers, "_PAIRS", [p for p in nets.layers._PAIRS
                                                                if p[0] is not nets.layers.TorchBatchNorm2d]),
     ["aten.native_batch_norm ran", "aten.native_batch_norm_backward ran",
      "layer4.1.bn2 (TorchBatchNorm2d) launched no _bn_fwd_kernel",
      "layer2.0.downsample.1 (TorchBatchNorm2d) launched no _bn_fwd_kernel"]),
    # convert() that forgets LRN and fuses no pair: every LRN stays torch's.
    ("alexnet", lambda mp: (mp.setattr(nets.layers, "_PAIRS", [p for p in nets.layers._PAIRS
                                                                if p[0] is not nn.LocalResponseNorm]),
                            mp.setattr(nets.layers, "fuse_pairs", lambda model: None)),
     ["aten.avg_pool3d ran", "features.norm2 (LocalResponseNorm) launched no _lrn_fwd_kernel",
      "features.norm1 -> features.pool1 ran unfused"]),
    # convert() that swaps every layer but fuses no pair: our kernels, unfused.
    ("googlenet", lambda mp: mp.setattr(nets.layers, "fuse_pairs", lambda model: None),
     ["maxpool1 -> norm1 ran unfused", "norm2 -> maxpool2 ran unfused"]),
    # The triton layer set running Inception blocks branch by branch (its Triton max-pool,
    # separate convs, cat): the fused block kernel is missing.
    ("googlenet", lambda mp: mp.setattr(nets.layers.TritonLayers, "inception",
                                        staticmethod(nets.layers._torch_inception_unfused)),
     ["inception3a (Inception) launched no _pointwise_fwd_kernel",
      "inception5b (Inception) launched no _pointwise_fwd_kernel"]),
])
def test_the_check_fails_when_convert_leaves_torch_layers(arch, patch, must_see, monkeypatch, device):
    patch(monkeypatch)
    size, batch, _ = NETS[arch]
    problems = dispatch_problems(_triton_model(arch, "convert"), size, batch, device, execute=False)
    text = "\n".join(problems)
    for words in must_see:
        assert words in text, f"the check missed {words!r}; it found:\n{text}"
