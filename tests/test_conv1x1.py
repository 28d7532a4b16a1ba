"""The 1x1 GEMM path (kernels/conv1x1.py) and the per-shape race that dispatches to it
(kernels/race.py): forward, data-grad and weight-grad against float64 torch with both
paths forced, the TMA and the pointer variant, strided views of every tensor argument, and
the dispatch rules (eligibility, forced paths and configs, tuned-table records, the
interpreter's and CONVBENCH_AUTOTUNE=first's choice, a timed race)."""

from __future__ import annotations

import json
from contextlib import ExitStack

import pytest
import torch
import torch.nn.functional as F
import triton
from hypothesis import given
from hypothesis import strategies as st

import kernels
from kernels import configs, race, tuned
from kernels.conv import conv2d_forward, conv2d_input_grad, conv2d_weight_grad, conv_geometry
from kernels.conv1x1 import SPLIT_ALIGN, conv1x1_forward, conv1x1_input_grad, conv1x1_weight_grad
from tests.helpers import VIEW_KINDS, LaunchRecorder, assert_close
from tests.test_conv import ARGS, run_and_compare, view_choices

SITES = race.SITES
FAST = {"_conv1x1_fwd_kernel", "_conv1x1_dgrad_kernel", "_conv1x1_wgrad_kernel"}
GENERIC = {"_conv_fwd_kernel", "_conv_dgrad_kernel", "_conv_wgrad_kernel"}


def _forced(path: str) -> ExitStack:
    stack = ExitStack()
    for site in SITES:
        stack.enter_context(race.forced_path(site, path))
    return stack


def _gemms(rec: LaunchRecorder) -> set:
    return {name for name in rec.names() if name in FAST | GENERIC}


# --------------------------------------------------------------------------- both paths
@pytest.mark.parametrize("path", ["generic", "gemm1x1"])  # the paths that serve a 1x1 stride-1 conv
def test_each_path_forced_on_a_1x1_conv(path, device):
    """The same 1x1 stride-1 conv (odd C and K) through each path: forward with bias,
    residual and ReLU, and every gradient, against float64; the path's kernels ran."""
    with _forced(path), LaunchRecorder() as rec:
        run_and_compare(2, 21, 5, 6, 37, 1, 1, 1, 0, 1, bias=True, residual=True, activation="relu",
                        channels_last=True, device=device, seed=1)
    assert _gemms(rec) == (FAST if path == "gemm1x1" else GENERIC), rec.names()


@st.composite
def gemm_cases(draw):
    """1x1 stride-1 problems with odd and even channel counts (odd ones leave the TMA
    variant: a pixel row is then no multiple of 16 bytes) and several tiles at 64."""
    return dict(N=draw(st.integers(1, 3)), C=draw(st.sampled_from([1, 3, 8, 17, 24, 64, 67])),
                H=draw(st.integers(1, 6)), W=draw(st.integers(1, 7)), K=draw(st.sampled_from([1, 5, 16, 33, 72])),
                bias=draw(st.booleans()), residual=draw(st.booleans()),
                activation=draw(st.sampled_from([None, "relu"])), channels_last=draw(st.booleans()),
                dtype=draw(st.sampled_from([torch.float32, torch.float16, torch.float64])))


@given(case=gemm_cases())
def test_gemm1x1_fuzz(case, device):
    with _forced("gemm1x1"), LaunchRecorder() as rec:
        run_and_compare(**{**case, "R": 1, "S": 1, "stride": 1, "padding": 0, "groups": 1}, device=device)
    assert _gemms(rec) == FAST, rec.names()


@pytest.mark.parametrize("arg", ARGS)
@pytest.mark.parametrize("kind", [k for k in VIEW_KINDS if k != "dense"])
def test_gemm1x1_every_argument_as_a_view(arg, kind, device):
    """Each tensor argument alone as each kind of strided view (along its last dim, and for
    x along channels too): the pointer variant reads them through their strides."""
    with _forced("gemm1x1"), LaunchRecorder() as rec:
        run_and_compare(2, 8, 3, 5, 16, 1, 1, 1, 0, 1, bias=True, residual=True, activation="relu",
                        channels_last=False, views={arg: (kind, -1)}, device=device)
        if arg == "x":
            run_and_compare(2, 8, 3, 5, 16, 1, 1, 1, 0, 1, bias=True, residual=True, activation="relu",
                            channels_last=True, views={arg: (kind, 1)}, device=device)
    assert _gemms(rec) == FAST, rec.names()


@given(case=gemm_cases(), views=view_choices(ARGS, (4, 4, 1, 4)))
def test_gemm1x1_strided_views_fuzz(case, views, device):
    """Every tensor argument a sliced / offset / transposed / expanded view at once, bias and
    residual on: forward and every gradient against float64 on the 1x1 path."""
    case = {**case, "bias": True, "residual": True, "dtype": torch.float64 if case["dtype"] == torch.float64
            else torch.float32}
    with _forced("gemm1x1"), LaunchRecorder() as rec:
        run_and_compare(**{**case, "R": 1, "S": 1, "stride": 1, "padding": 0, "groups": 1}, views=views,
                        device=device)
    assert _gemms(rec) == FAST, rec.names()


def test_outputs_into_a_channel_slice_leave_the_neighbours_alone(device):
    """Forward and data-grad written into a channel slice of a wider channels_last buffer (as
    a concatenation does): TMA-fed, the store's box is clipped at the slice's last channel,
    and the channels around it keep their poison."""
    (x64, w64, _, r64, _), (x, w, _, r, _) = _inputs(2, 16, 3, 5, 24, torch.float32, device, seed=5)
    buf = torch.full((2, 56, 3, 5), 7.0, device=device).to(memory_format=torch.channels_last)
    grad_buf = torch.full((2, 40, 3, 5), 7.0, device=device).to(memory_format=torch.channels_last)
    geo = conv_geometry(x, w)
    with _forced("gemm1x1"), LaunchRecorder() as rec:
        conv2d_forward(x, w, out=buf[:, 16:40])
        conv2d_input_grad(r, w, geo, out=grad_buf[:, 8:24])
    assert [la.kwargs["USE_TMA"] for la in rec.launches] == [True, True]
    assert_close(buf[:, 16:40], F.conv2d(x64, w64), reduction=16, name="forward into a slice")
    assert_close(grad_buf[:, 8:24], torch.einsum("nkhw,kc->nchw", r64, w64[:, :, 0, 0]), reduction=24,
                 name="data-grad into a slice")
    assert (buf[:, :16] == 7).all() and (buf[:, 40:] == 7).all()
    assert (grad_buf[:, :8] == 7).all() and (grad_buf[:, 24:] == 7).all()


# --------------------------------------------------------------------------- TMA and pointers
def _inputs(N, C, H, W, K, dtype, device, seed=0):
    gen = torch.Generator().manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=gen).to(dtype).double()
    x64, w64, b64, r64, m64 = rnd(N, C, H, W), rnd(K, C, 1, 1), rnd(K), rnd(N, K, H, W), rnd(N, C, H, W)
    dev = lambda t: t.to(device, dtype).contiguous(memory_format=torch.channels_last) if t.dim() == 4 \
        else t.to(device, dtype)
    return (x64, w64, b64, r64, m64), tuple(dev(t) for t in (x64, w64, b64, r64, m64))


@pytest.mark.parametrize("use_tma", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_launchers_tma_and_pointer_variants(use_tma, dtype, device):
    """Each launcher with the variant forced, on tensors that allow both (channels multiples
    of 8): several tiles at 64 (PIXELS 150, K 72), the epilogues and the ReLU mask on, and a
    weight-grad of 2 splits whose boundary (256 rows) falls inside a tile's K steps."""
    N, C, H, W, K = 6, 24, 5, 10, 72  # 300 pixels: splits of 256 and 44 rows
    (x64, w64, b64, r64, m64), (x, w, b, r, m) = _inputs(N, C, H, W, K, dtype, device)
    with LaunchRecorder() as rec:
        y = conv1x1_forward(x, w, b, r, torch.empty_like(r), relu=True, use_tma=use_tma)
        dx = conv1x1_input_grad(r, w, torch.empty_like(x), relu_input=m, use_tma=use_tma)
        dw = conv1x1_weight_grad(x, r, dtype, split_k=2, use_tma=use_tma)
    assert {launch.kwargs["USE_TMA"] for launch in rec.launches if launch.name in FAST} == {use_tma}
    wgrad = next(launch for launch in rec.launches if launch.name == "_conv1x1_wgrad_kernel")
    assert wgrad.grid(wgrad.kwargs | {"BLOCK_M": 64, "BLOCK_N": 64})[1] == 2
    assert_close(y, F.relu(F.conv2d(x64, w64, b64) + r64), reduction=C + 2, name="forward")
    dx_ref = torch.einsum("nkhw,kc->nchw", r64, w64[:, :, 0, 0]) * (m64 > 0)
    assert_close(dx, dx_ref, reduction=K, name="data-grad")
    assert_close(dw, torch.einsum("nkhw,nchw->kc", r64, x64)[:, :, None, None], reduction=N * H * W,
                 name="weight-grad")


def test_dispatch_picks_tma_where_every_tensor_allows_it(device):
    """TMA for aligned channels_last tensors; the pointer variant for an odd channel count
    (a 5-channel pixel row is no multiple of 16 bytes) and for an NCHW-strided output."""
    def variants(C, K, out=None):
        x = torch.randn(2, C, 3, 4, device=device).to(memory_format=torch.channels_last)
        w = torch.randn(K, C, 1, 1, device=device)
        with _forced("gemm1x1"), LaunchRecorder(execute=False) as rec:
            conv2d_forward(x, w, out=out)
        return [launch.kwargs["USE_TMA"] for launch in rec.launches]

    assert variants(8, 16) == [True]
    assert variants(5, 16) == [False]
    assert variants(8, 16, out=torch.empty(2, 16, 3, 4, device=device)) == [False]  # NCHW out
    expanded = torch.empty(1, 16, 1, 1, device=device).expand(2, 16, 3, 4)  # every pixel one row: stride 0
    assert variants(8, 16, out=torch.empty(2, 16, 3, 4, device=device).to(memory_format=torch.channels_last)) == [True]
    x = torch.randn(1, 8, 1, 1, device=device).expand(2, 8, 3, 4)
    with _forced("gemm1x1"), LaunchRecorder(execute=False) as rec:
        conv2d_forward(x, torch.randn(16, 8, 1, 1, device=device), residual=expanded)
    assert [launch.kwargs["USE_TMA"] for launch in rec.launches] == [False]
    with pytest.raises(ValueError, match="use_tma=True"):
        x = torch.randn(1, 5, 2, 2, device=device).to(memory_format=torch.channels_last)
        conv1x1_forward(x, torch.randn(3, 5, 1, 1, device=device), None, None, torch.empty(1, 3, 2, 2, device=device),
                        relu=False, use_tma=True)


def test_weight_grad_split_shares_are_aligned(device):
    """A split's share is a multiple of SPLIT_ALIGN rows: asking for 7 splits of 600 pixels
    gives 256-row shares, 3 splits (a TMA box never reaches into the next share)."""
    (x64, _, _, r64, _), (x, _, _, r, _) = _inputs(6, 8, 10, 10, 16, torch.float32, device, seed=3)
    with LaunchRecorder() as rec:
        dw = conv1x1_weight_grad(x, r, torch.float32, split_k=7)
    (launch,) = [la for la in rec.launches if la.name == "_conv1x1_wgrad_kernel"]
    split_rows = dict(zip(configs.TUNABLE["_conv1x1_wgrad_kernel"].arg_names, launch.args))["SPLIT_ROWS"]
    assert split_rows == SPLIT_ALIGN and launch.grid({"BLOCK_M": 64, "BLOCK_N": 64})[1] == 3
    assert_close(dw, torch.einsum("nkhw,nchw->kc", r64, x64)[:, :, None, None], reduction=600, name="weight-grad")


# --------------------------------------------------------------------------- dispatch
@pytest.mark.parametrize("name, shape", [
    ("3x3", dict(w=(6, 8, 3, 3), stride=1, padding=1, groups=1)),
    ("1x1 stride 2", dict(w=(6, 8, 1, 1), stride=2, padding=0, groups=1)),
    ("1x1 padded", dict(w=(6, 8, 1, 1), stride=1, padding=1, groups=1)),
    ("1x1 two groups", dict(w=(6, 4, 1, 1), stride=1, padding=0, groups=2)),
])
def test_other_convs_go_to_the_generic_kernel_even_when_forced(name, shape, device):
    """Only a 1x1, stride-1, unpadded, one-group conv may take the GEMM path: forcing it
    leaves every other shape on the generic kernels, forward and both gradients, correct."""
    K, CG, R, S = shape["w"]
    with _forced("gemm1x1"), LaunchRecorder() as rec:
        run_and_compare(2, CG * shape["groups"], 5, 4, K, R, S, shape["stride"], shape["padding"], shape["groups"],
                        bias=True, residual=False, activation="relu", channels_last=True, device=device)
    assert _gemms(rec) == GENERIC, rec.names()


def test_interpreter_default_is_the_generic_path(device):
    """No forcing, no table, no race (the interpreter): the first candidate, the generic
    kernel, serves an eligible shape; the 1x1 path replaces it only where measured."""
    x = torch.randn(2, 8, 3, 3, device=device, requires_grad=True)
    w = torch.randn(4, 8, 1, 1, device=device, requires_grad=True)
    with LaunchRecorder(execute=False) as rec:
        conv2d_forward(x, w)
    assert _gemms(rec) == {"_conv_fwd_kernel"}


def test_forced_config_implies_its_path(device):
    """A sweep forcing a config of one path's kernel runs that path: a 1x1-kernel item times
    the 1x1 kernel, a generic-kernel item of the same layer the generic one, whatever the
    default or a race would pick."""
    x = torch.randn(2, 8, 3, 3, device=device)
    w = torch.randn(4, 8, 1, 1, device=device)
    dy = torch.randn(2, 4, 3, 3, device=device)
    geo = conv_geometry(x, w)

    def launched(fwd, dgrad, wgrad, gemm, split):
        with configs.forced_config(fwd, configs.configs(gemm)[0]), \
                configs.forced_config(dgrad, configs.configs(gemm)[0]), \
                configs.forced_config(wgrad, configs.configs(split)[0]), LaunchRecorder(execute=False) as rec:
            conv2d_forward(x, w)
            conv2d_input_grad(dy, w, geo)
            conv2d_weight_grad(x, dy, geo, w.dtype)
        return _gemms(rec)

    assert launched("_conv1x1_fwd_kernel", "_conv1x1_dgrad_kernel", "_conv1x1_wgrad_kernel", "conv1x1",
                    "conv1x1_wgrad") == FAST
    assert launched("_conv_fwd_kernel", "_conv_dgrad_kernel", "_conv_wgrad_kernel", "conv_gemm",
                    "conv_wgrad") == GENERIC


def _table(tmp_path, monkeypatch, records):
    path = tuned.write_table(tmp_path / "t.json", "cpu", triton.__version__, [], dispatch=records)
    monkeypatch.setenv("CONVBENCH_TUNED", str(path))
    tuned._TABLES.clear()
    monkeypatch.setattr(tuned, "_TABLES", {})
    return path


def test_table_record_picks_the_path(tmp_path, monkeypatch, device):
    x = torch.randn(2, 8, 3, 3, device=device)
    w = torch.randn(4, 8, 1, 1, device=device)
    key = {"PIXELS": 18, "C": 8, "K": 4}
    record = {"site": "conv_forward", "dtype": "float32", "key": key, "path": "gemm1x1",
              "ms": {"generic": 0.02, "gemm1x1": 0.01}, "layer": "test"}
    path = _table(tmp_path, monkeypatch, [record])
    assert json.loads(path.read_text())["dispatch"] == [record]
    with LaunchRecorder(execute=False) as rec:
        conv2d_forward(x, w)  # recorded: the 1x1 path
        conv2d_forward(torch.randn(2, 8, 3, 5, device=device), w)  # another key: the default
        conv2d_forward(x.double(), w.double())  # another dtype: the default
    assert [la.name for la in rec.launches] == ["_conv1x1_fwd_kernel", "_conv_fwd_kernel", "_conv_fwd_kernel"]
    with race.forced_path("conv_forward", "generic"), LaunchRecorder(execute=False) as rec:
        conv2d_forward(x, w)  # forcing outranks the table
    assert [la.name for la in rec.launches] == ["_conv_fwd_kernel"]


@pytest.mark.parametrize("record, problem", [
    ({"site": "conv_forward", "dtype": "float32", "key": {}, "path": "gemm1x1", "ms": {"gemm1x1": 2.0, "generic": 1.0}},
     "is not the fastest"),
    ({"site": "conv_forward", "dtype": "float32", "key": {}, "path": "gemm1x1", "ms": {"gemm1x1": 1.0}},
     "two or more paths"),
    ({"site": "conv_forward", "dtype": "float32", "key": {}, "path": "gemm1x1",
      "ms": {"gemm1x1": 1.0, "generic": -1.0}}, "positive"),
    ({"site": "conv_forward", "key": {}, "path": "gemm1x1", "ms": {}}, "lacks"),
])
def test_malformed_dispatch_records_are_refused(record, problem, tmp_path):
    assert problem in tuned.dispatch_problem(record)
    with pytest.raises(ValueError, match=problem):
        tuned.write_table(tmp_path / "t.json", "cpu", triton.__version__, [], dispatch=[record])


def _candidates(calls, paths=race.PATHS):
    """Stand-in candidates of `paths` (default every path: each is timed the same way)."""
    return [race.Candidate(p, (), lambda p=p: calls.append(p)) for p in paths]


def test_race_on_a_gpu_times_each_path_once_per_shape(monkeypatch):
    """Off the interpreter, with no record: each candidate runs once and is timed, the
    fastest wins and is remembered (the second launch of the shape times nothing)."""
    monkeypatch.setattr(configs, "interpreting", lambda: False)
    monkeypatch.setenv("CONVBENCH_TUNED", "off")
    monkeypatch.setenv("CONVBENCH_AUTOTUNE", "full")
    monkeypatch.setattr(race, "_WON", {})
    monkeypatch.setattr(race, "RACES", {})
    times = dict.fromkeys(race.PATHS, 0.5) | {"gemm1x1": 0.2}  # every path timed, the 1x1 one fastest
    timed = []

    def bench(fn):
        before = len(calls)
        fn()
        timed.append(calls[before])
        return times[calls[before]]

    monkeypatch.setattr(race, "_bench", bench)
    calls = []
    like = torch.empty(1)
    won = race.choose("conv_forward", {"PIXELS": 1, "C": 2, "K": 3}, like, _candidates(calls))
    assert won.path == "gemm1x1" and timed == list(race.PATHS)
    assert list(race.RACES.values()) == [times]
    again = race.choose("conv_forward", {"PIXELS": 1, "C": 2, "K": 3}, like, _candidates(calls))
    assert again.path == "gemm1x1" and timed == list(race.PATHS)
    other = race.choose("conv_forward", {"PIXELS": 9, "C": 2, "K": 3}, like, _candidates(calls))
    assert other.path == "gemm1x1" and len(timed) == 2 * len(race.PATHS)


def test_autotune_first_takes_the_first_path_without_racing(monkeypatch):
    monkeypatch.setattr(configs, "interpreting", lambda: False)
    monkeypatch.setenv("CONVBENCH_TUNED", "off")
    monkeypatch.setenv("CONVBENCH_AUTOTUNE", "first")
    monkeypatch.setattr(race, "_bench", lambda fn: pytest.fail("CONVBENCH_AUTOTUNE=first must not race"))
    calls = []
    won = race.choose("conv_dgrad", {"PIXELS": 1, "C": 1, "K": 1}, torch.empty(1), _candidates(calls))
    assert won.path == "generic"
    assert calls == []


def test_race_unrecorded_races_under_autotune_first(monkeypatch):
    """CONVBENCH_RACE=unrecorded (the GPU check's nets): under CONVBENCH_AUTOTUNE=first a pass
    no record covers still races its candidates; a recorded one takes its record."""
    monkeypatch.setattr(configs, "interpreting", lambda: False)
    monkeypatch.setenv("CONVBENCH_TUNED", "off")
    monkeypatch.setenv("CONVBENCH_AUTOTUNE", "first")
    monkeypatch.setenv("CONVBENCH_RACE", "unrecorded")
    monkeypatch.setattr(race, "_WON", {})
    monkeypatch.setattr(race, "RACES", {})
    times = dict.fromkeys(race.PATHS, 0.5) | {"s2d": 0.1}
    calls = []

    def bench(fn):
        before = len(calls)
        fn()
        return times[calls[before]]

    monkeypatch.setattr(race, "_bench", bench)
    won = race.choose("conv_forward_stats", {"PIXELS": 1, "C": 1, "K": 1}, torch.empty(1), _candidates(calls))
    assert won.path == "s2d" and len(race.RACES) == 1

    class Recorded:
        def path(self, site, key, dtype):
            return "generic"

    monkeypatch.setattr(race.tuned, "table_for", lambda device: Recorded())
    again = race.choose("conv_forward_stats", {"PIXELS": 2, "C": 1, "K": 1}, torch.empty(1), _candidates(calls))
    assert again.path == "generic" and len(race.RACES) == 1  # the record decides: no race


def test_no_race_where_the_output_is_written_over_an_input(monkeypatch, device):
    """A forward written into its own residual's memory cannot be re-run for a race (each
    run would add the residual again): the first candidate runs, once, and is right."""
    monkeypatch.setattr(configs, "interpreting", lambda: False)
    monkeypatch.setenv("CONVBENCH_TUNED", "off")
    monkeypatch.setenv("CONVBENCH_AUTOTUNE", "full")
    monkeypatch.setattr(race, "_WON", {})
    monkeypatch.setattr(race, "_bench", lambda fn: pytest.fail("a race re-ran a pass that writes over its input"))
    (x64, w64, _, r64, _), (x, w, _, r, _) = _inputs(2, 8, 3, 4, 16, torch.float32, device, seed=6)
    with LaunchRecorder() as rec:
        conv2d_forward(x, w, residual=r, out=r)
    assert [la.name for la in rec.launches] == ["_conv_fwd_kernel"]
    assert_close(r, F.conv2d(x64, w64) + r64, reduction=10, name="forward over its residual")


def test_forced_path_arguments_are_checked():
    with pytest.raises(ValueError, match="site must be one of"), race.forced_path("conv_backward", "generic"):
        pass
    with pytest.raises(ValueError, match="path must be one of"), race.forced_path("conv_forward", "cudnn"):
        pass


def test_module_on_the_1x1_path(device):
    """kernels.Conv2d (what the nets build) on a 1x1 layer with the path forced, one training
    step against float64."""
    torch.manual_seed(4)
    conv = kernels.Conv2d(24, 40, 1, bias=False).to(device)
    x = torch.randn(2, 24, 4, 4, device=device).to(memory_format=torch.channels_last).requires_grad_()
    with _forced("gemm1x1"), LaunchRecorder() as rec:
        y = conv(x)
        y.backward(torch.ones_like(y))
    assert _gemms(rec) == FAST
    w64 = conv.weight.detach().double().requires_grad_()
    x64 = x.detach().double().requires_grad_()
    ref = F.conv2d(x64, w64)
    ref.backward(torch.ones_like(ref))
    assert_close(y, ref, reduction=24, name="forward")
    assert_close(x.grad, x64.grad, reduction=40, name="grad x")
    assert_close(conv.weight.grad, w64.grad, reduction=32, name="grad weight")
