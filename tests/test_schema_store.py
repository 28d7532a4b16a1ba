"""The result files without a report: what the writers put on disk (cells, header, flushing,
appending), the summary's atomic write, finding runs, and what the loaders make of every file
they may meet. No charts are drawn here, so these run in a fraction of a second."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from benchmarks.store import RunStore
from reports.schema import (
    COLUMNS,
    KERNEL_COLUMNS,
    RUNS,
    KernelWriter,
    ResultFileError,
    ResultWriter,
    beyond_tolerance,
    list_runs,
    load_kernels,
    load_results,
    load_summary,
    run_dir,
    write_summary,
)

ROW = dict(run_id="r", arch="alexnet", backend="torch", dtype="float32", batch_size=8, image_size=224, mode="infer",
           layer="features.conv1", op="conv", **{"pass": "fwd"})


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


# --------------------------------------------------------------------------- writing
def test_result_cells_header_and_flush(tmp_path):
    """Floats to 6 significant digits, None and NaN as empty cells, the rest as given; the
    header and each row are on disk as soon as written."""
    run = tmp_path / "deep" / "run"  # made with its parents
    w = ResultWriter(run)
    assert _lines(run / "results.csv") == [",".join(COLUMNS)]  # the header is on disk before any row
    w.write(**ROW, ms=1 / 3, ms_p20=None, ms_p80=math.nan, samples=5, error="x, \"y\"")
    assert w.rows == 1
    # flushed as written: a reader sees the row while the writer is open
    _, row = _lines(run / "results.csv")
    cells = dict(zip(COLUMNS, next(iter(pd.read_csv(run / "results.csv", dtype=str,
                                                    keep_default_na=False).itertuples(index=False)))))
    assert cells["ms"] == "0.333333" and cells["ms_p20"] == "" and cells["ms_p80"] == "" and cells["samples"] == "5"
    assert cells["status"] == "ok" and cells["error"] == 'x, "y"' and cells["pass"] == "fwd"
    w.close()
    assert row.endswith(',ok,"x, ""y"""')


def test_a_second_writer_appends_without_a_second_header(tmp_path):
    with ResultWriter(tmp_path) as w:
        w.write(**ROW, ms=1.0)
    with ResultWriter(tmp_path) as w:
        w.write(**{**ROW, "layer": "features.conv2"}, ms=2.0)
        assert w.rows == 1
    lines = _lines(tmp_path / "results.csv")
    assert len(lines) == 3 and lines[0].startswith("run_id,")
    frame = load_results(tmp_path)
    assert list(frame.layer) == ["features.conv1", "features.conv2"] and list(frame.ms) == [1.0, 2.0]


def test_writer_checks_status_pass_and_columns(tmp_path):
    with ResultWriter(tmp_path) as w:
        for status in ("ok", "oom", "failed", "skipped"):
            w.write(**ROW, status=status)
        with pytest.raises(ValueError, match=r"status must be one of \('ok', 'oom', 'failed', 'skipped'\), got 'OK'"):
            w.write(**ROW | {"status": "OK"})
        with pytest.raises(ValueError, match=r"pass must be one of \('fwd', 'bwd', 'fwd\+bwd', 'train_step'\), "
                                             r"got None"):
            w.write(**{k: v for k, v in ROW.items() if k != "pass"})
        with pytest.raises(ValueError, match=r"unknown result columns: \['ms_median', 'tflop'\]"):
            w.write(**ROW, tflop=1.0, ms_median=2.0)
        assert w.rows == 4
    assert list(load_results(tmp_path).status) == ["ok", "oom", "failed", "skipped"]


def test_kernel_rows_round_trip(tmp_path):
    with ResultWriter(tmp_path / "k") as w:  # a run folder is one with results.csv
        w.write(**ROW)
    with KernelWriter(tmp_path / "k") as w:
        w.write(run_id="r", arch="alexnet", mode="infer", backend="triton", layer="features.conv1", **{"pass": "fwd"},
                kernel="_conv_fwd_kernel", calls=2, us=12.5, share=0.25, source="device kernels")
        with pytest.raises(ValueError, match="unknown result columns"):
            w.write(ms=1.0)
    frame = load_kernels(tmp_path / "k")
    assert list(frame.columns) == KERNEL_COLUMNS
    assert frame.iloc[0].to_dict() == {"run_id": "r", "arch": "alexnet", "mode": "infer", "backend": "triton",
                                       "layer": "features.conv1", "pass": "fwd", "kernel": "_conv_fwd_kernel",
                                       "calls": 2.0, "us": 12.5, "share": 0.25, "source": "device kernels"}


def test_load_kernels_of_a_run_without_them(tmp_path):
    with ResultWriter(tmp_path) as w:
        w.write(**ROW)
    frame = load_kernels(tmp_path)
    assert frame.empty and list(frame.columns) == KERNEL_COLUMNS


def test_summary_is_replaced_whole(tmp_path):
    with ResultWriter(tmp_path) as w:
        w.write(**ROW)
    path = write_summary(tmp_path, {"run_id": "r", "out": tmp_path, "n": 1})
    assert path == tmp_path / "summary.json"
    assert json.loads(path.read_text()) == {"run_id": "r", "out": str(tmp_path), "n": 1}  # paths as text
    write_summary(tmp_path, {"run_id": "r", "n": 2})
    assert load_summary(tmp_path) == {"run_id": "r", "n": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv", "summary.json"]  # no temporary file


def test_run_store_layout(tmp_path):
    with RunStore(tmp_path, run_id="20261127-100000.000-aaaaaa") as store:
        store.results.write(**ROW, ms=1.0)
        store.kernels.write(run_id="r", kernel="k")
        store.save_summary({"run_id": store.run_id})
    assert sorted(p.name for p in store.dir.iterdir()) == ["kernels.csv", "results.csv", "summary.json"]
    assert store.dir == tmp_path / RUNS / "20261127-100000.000-aaaaaa"
    with pytest.raises(FileExistsError):
        RunStore(tmp_path, run_id="20261127-100000.000-aaaaaa")


# --------------------------------------------------------------------------- finding runs
def _store(tmp_path, *ids):
    for run_id in ids:
        with ResultWriter(tmp_path / RUNS / run_id) as w:
            w.write(**ROW | {"run_id": run_id}, ms=1.0)
    return tmp_path


def test_list_runs_only_folders_oldest_first(tmp_path):
    assert list_runs(tmp_path) == []
    _store(tmp_path, "20261127-120000.000-cccccc", "20261127-100000.000-aaaaaa")
    (tmp_path / RUNS / "notes.txt").write_text("not a run")
    assert list_runs(tmp_path) == ["20261127-100000.000-aaaaaa", "20261127-120000.000-cccccc"]


def test_run_dir_of_a_run_folder(tmp_path):
    out = _store(tmp_path, "20261127-100000.000-aaaaaa")
    folder = out / RUNS / "20261127-100000.000-aaaaaa"
    assert run_dir(folder) == folder and run_dir(folder, "20261127-100000.000-aaaaaa") == folder
    with pytest.raises(ResultFileError, match=f"{folder} is the folder of run 20261127-100000.000-aaaaaa, "
                                              "not of run other"):
        run_dir(folder, "other")
    assert run_dir(out, "20261127-100000.000-aaaaaa") == folder  # a whole id


def test_run_dir_errors_name_the_runs(tmp_path):
    with pytest.raises(ResultFileError, match=f"^{tmp_path / 'nowhere'}: no such folder$"):
        run_dir(tmp_path / "nowhere")
    with pytest.raises(ResultFileError, match=rf"^{tmp_path} holds no runs \(no runs/<id>/results.csv\); run "
                                              rf"`python -m benchmarks.profile --out {tmp_path}` first$"):
        run_dir(tmp_path)
    ids = [f"20261127-1{i}0000.000-aaaaaa" for i in range(7)]
    out = _store(tmp_path, *ids)
    with pytest.raises(ResultFileError) as err:
        run_dir(out, "2025")
    assert str(err.value) == f"{out} has no run '2025'; runs there: {', '.join(ids[-5:])} ..."
    with pytest.raises(ResultFileError) as err:
        run_dir(out, "20261127-1")
    assert str(err.value) == (f"{out} has no run '20261127-1' (ambiguous prefix); runs there: "
                              f"{', '.join(ids[-5:])} ...")
    few = _store(tmp_path / "few", *ids[:2])
    with pytest.raises(ResultFileError) as err:
        run_dir(few, "x")
    assert str(err.value) == f"{few} has no run 'x'; runs there: {', '.join(ids[:2])}"


# --------------------------------------------------------------------------- reading
def test_numbers_are_floats_and_text_stays_text(tmp_path):
    with ResultWriter(tmp_path) as w:
        w.write(**ROW | {"layer": "1", "run_id": "007", "op": "NA"}, ms=2.5, kernel="nan", error="None")
        w.write(**ROW, ms=None, status="failed", error="")
    frame = load_results(tmp_path)
    assert frame.attrs["truncated"] is False
    assert list(frame.layer) == ["1", "features.conv1"] and frame.run_id[0] == "007"  # ids stay text
    assert (frame.op[0], frame.kernel[0], frame.error[0], frame.error[1]) == ("NA", "nan", "None", "")
    assert frame.ms[0] == 2.5 and math.isnan(frame.ms[1])
    assert frame.ms.dtype == float and frame.batch_size.tolist() == [8, 8]


def test_garbage_in_a_number_cell_reads_as_missing(tmp_path):
    with ResultWriter(tmp_path) as w:
        w.write(**ROW, ms="fast", samples="5")
    frame = load_results(tmp_path)
    assert math.isnan(frame.ms[0]) and frame.samples[0] == 5.0


@pytest.mark.parametrize("content, message", [
    (b"", "is empty (not even a header): not a convbench result file"),
    (b"  \n\n", "is empty (not even a header): not a convbench result file"),
    (b'run_id,"arch\n', "is not a readable CSV: "),
    (b"run_id,arch\nr,alexnet\n", "lacks columns ['backend', 'dtype', "),
])
def test_unreadable_results(tmp_path, content, message):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "summary.json").write_text("{}")
    (folder / "results.csv").write_bytes(content)
    with pytest.raises(ResultFileError) as err:
        load_results(folder)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_a_missing_results_file_in_a_run_folder(tmp_path):
    (tmp_path / RUNS / "r1").mkdir(parents=True)
    with pytest.raises(ResultFileError, match=f"{tmp_path / RUNS / 'r1' / 'results.csv'}: no such file"):
        load_results(tmp_path)


def test_unknown_status_is_refused(tmp_path):
    with ResultWriter(tmp_path) as w:
        w.write(**ROW)
    path = tmp_path / "results.csv"
    path.write_text(path.read_text().replace(",ok,", ",great,"))
    with pytest.raises(ResultFileError, match=rf"{path} has rows with unknown status \['great'\]"):
        load_results(tmp_path)


def test_summary_absent_invalid_or_not_an_object(tmp_path):
    with ResultWriter(tmp_path) as w:
        w.write(**ROW)
    assert load_summary(tmp_path) == {}
    (tmp_path / "summary.json").write_text("[1]")
    with pytest.raises(ResultFileError, match=r"summary\.json holds a list, not a run summary object"):
        load_summary(tmp_path)
    (tmp_path / "summary.json").write_bytes(b"\xff\xfe")
    with pytest.raises(ResultFileError, match=r"summary\.json is not valid JSON"):
        load_summary(tmp_path)


def test_an_error_equal_to_its_bound_is_within_it():
    frame = pd.DataFrame({"max_rel_err": [8e-3, 8e-3, 1e-3], "rel_tol": [8e-3, 8e-3, 8e-3],
                          "grad_max_rel_err": [math.nan, 1.6e-2, 1.6e-2], "grad_rel_tol": [math.nan, 1.6e-2, 1e-2]})
    assert list(beyond_tolerance(frame)) == [False, False, True]


def test_kernel_names_layers_and_run_ids_stay_text(tmp_path):
    """A Sequential's layer "0", a run id "007", a kernel called "1": text, not numbers."""
    with ResultWriter(tmp_path) as w:
        w.write(**ROW)
    with KernelWriter(tmp_path) as w:
        w.write(run_id="007", arch="alexnet", mode="infer", backend="torch", layer="0", **{"pass": "fwd"},
                kernel="1", calls=1, us=1.0, share=1.0, source="cpu ops")
    row = load_kernels(tmp_path).iloc[0]
    assert (row.run_id, row.layer, row.kernel) == ("007", "0", "1")


def test_text_columns_stay_text_even_when_they_look_like_numbers(tmp_path):
    text = {"run_id": "007", "layer": "0", "op": "1", "kernel": "2", "ceiling": "3", "ceiling_unit": "4",
            "reference": "5", "error": "6"}
    with ResultWriter(tmp_path) as w:
        w.write(**ROW | text, ms=1.0)
    row = load_results(tmp_path).iloc[0]
    assert {k: row[k] for k in text} == text


def test_a_row_cut_mid_line_leaves_the_rows_before_it_whole(tmp_path):
    with ResultWriter(tmp_path) as w:
        w.write(**ROW, ms=1.0, status="failed", error="RuntimeError: boom")  # error is the last column
        w.write(**ROW, ms=2.0)
    path = tmp_path / "results.csv"
    raw = path.read_bytes()
    path.write_bytes(raw[: raw.rfind(b"\n", 0, len(raw) - 1) + 10])  # 9 bytes of the second row
    frame = load_results(tmp_path)
    assert frame.attrs["truncated"] is True and len(frame) == 1
    assert frame.error[0] == "RuntimeError: boom" and frame.ms[0] == 1.0


def test_a_bad_pass_is_named(tmp_path):
    with ResultWriter(tmp_path) as w, pytest.raises(ValueError, match=r", got 'sideways'$"):
        w.write(**ROW | {"pass": "sideways"})


@pytest.mark.parametrize("n, more", [(5, ""), (6, " ...")])
def test_an_unknown_run_lists_the_last_five(tmp_path, n, more):
    ids = [f"20261127-1{i}0000.000-aaaaaa" for i in range(n)]
    out = _store(tmp_path, *ids)
    with pytest.raises(ResultFileError) as err:
        run_dir(out, "x")
    assert str(err.value) == f"{out} has no run 'x'; runs there: {', '.join(ids[-5:])}{more}"


def test_an_unparsable_csv_says_what_the_parser_said(tmp_path):
    raw = b'run_id,"arch\n'
    with pytest.raises(pd.errors.ParserError) as parser:
        pd.read_csv(io.BytesIO(raw))
    (tmp_path / "results.csv").write_bytes(raw)
    with pytest.raises(ResultFileError) as err:
        load_results(tmp_path)
    assert str(err.value) == f"{tmp_path / 'results.csv'} is not a readable CSV: {str(parser.value).splitlines()[0]}"
