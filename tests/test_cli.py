"""The command line: replay/embed output contracts, report contents, and exit codes without tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .conftest import INVALID_LINES, N_FEATURES, blob_rows
from streamlearn import checkpoint
from streamlearn.cli import main
from streamlearn.config import Settings
from streamlearn.dirlock import DirectoryLock
from streamlearn.replay import replay

REPORT_KEYS = {
    "samples", "valid", "invalid", "labeled", "accuracy", "drift_events", "throughput_samples_per_s",
    "wall_time_s", "model_version", "classes", "n_features", "seed",
}
INVALID_BY_LINE = {raw: reason for raw, reason in INVALID_LINES}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def expected_row(number: int, raw: str) -> dict[str, Any] | None:
    """The input row a valid line holds, or None for one of the injected invalid lines."""
    return None if raw in INVALID_BY_LINE else json.loads(raw)


def one_line(text: str) -> bool:
    return text.count("\n") == 1 and "Traceback" not in text and "usage:" not in text


def test_replay_predictions_match_the_contract_line_by_line(
    stream_lines: list[str], write_jsonl, small_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_jsonl(stream_lines)
    preds, report_path = tmp_path / "out" / "preds.jsonl", tmp_path / "out" / "report.json"
    code = main(["replay", str(data), "--config", str(small_config), "--predictions", str(preds),
                 "--report", str(report_path)])
    assert code == 0, capsys.readouterr().err
    assert "replayed" in capsys.readouterr().out

    rows = read_jsonl(preds)
    assert len(rows) == len(stream_lines)
    last_version = -1
    for number, (raw, out) in enumerate(zip(stream_lines, rows), start=1):
        given = expected_row(number, raw)
        if given is None:
            assert set(out) == {"id", "prediction", "label", "model_version", "error", "detail"}
            assert out["error"] == INVALID_BY_LINE[raw] and out["detail"]
            # Its own label when that is valid; the model version that would have predicted it.
            assert out["prediction"] is None and out["label"] == ("a" if raw == '{"label": "a"}' else None)
            own_id = "bad-dim" if "bad-dim" in raw else None
            assert out["id"] == (own_id or str(number))
            following = next(r for r in rows[number:] if "error" not in r)
            assert out["model_version"] == following["model_version"]
        else:
            assert set(out) == {"id", "prediction", "label", "model_version"}
            assert out["id"] == given.get("id", str(number))
            assert out["label"] == given.get("label")
            assert type(out["label"]) is type(given.get("label"))  # 2 stays an int, "a" a string
        assert isinstance(out["model_version"], int) and out["model_version"] >= last_version
        last_version = out["model_version"]

    report = json.loads(report_path.read_text())
    assert REPORT_KEYS <= set(report)
    assert report["samples"] == len(stream_lines)
    assert report["valid"] == len(stream_lines) - len(INVALID_LINES)
    assert report["invalid"] == dict(Counter(INVALID_BY_LINE[r] for r, _ in INVALID_LINES))
    labeled = [r for r in rows if "error" not in r and r["label"] is not None]
    assert report["labeled"] == len(labeled)
    # Prequential accuracy is exactly what the predictions file shows.
    hits = sum(r["prediction"] == r["label"] and type(r["prediction"]) is type(r["label"]) for r in labeled)
    assert report["accuracy"] == pytest.approx(hits / len(labeled))
    assert report["accuracy"] > 0.8  # three well-separated blobs: the learner must get most of them
    assert set(map(json.dumps, report["classes"])) == {'"a"', '"b"', "2"}
    assert report["n_features"] == N_FEATURES and report["seed"] == 0
    assert report["drift_events"]["count"] == len(report["drift_events"]["events"])
    assert report["wall_time_s"] > 0 and report["throughput_samples_per_s"] > 0
    assert report["model_version"] == rows[-1]["model_version"] or report["model_version"] > last_version


def test_a_rejected_line_carries_the_model_version_that_would_have_predicted_it(
    write_jsonl, tmp_path: Path, capsys
) -> None:
    # It carried the version from before its batch (0 amid rows of version 6 in a first batch of 256).
    lines = [json.dumps(row) for row in blob_rows(400)]
    for k in range(len(lines) - 1, 0, -9):
        lines.insert(k, "not json")
    data, preds = write_jsonl(lines), tmp_path / "preds.jsonl"
    assert main(["replay", str(data), "--predictions", str(preds)]) == 0  # batch 256: versions move within it
    capsys.readouterr()
    rows = read_jsonl(preds)
    rejected = [n for n, row in enumerate(rows) if "error" in row]
    for n in rejected:
        following = next(r for r in rows[n:] if "error" not in r)
        assert rows[n]["model_version"] == following["model_version"]
    assert len({rows[n]["model_version"] for n in rejected if n < 256}) > 1


def test_replay_is_deterministic_for_a_seed(stream_lines: list[str], write_jsonl, small_settings: Settings,
                                             tmp_path: Path) -> None:
    data = write_jsonl(stream_lines[:120])
    first, second = tmp_path / "1.jsonl", tmp_path / "2.jsonl"
    replay(data, small_settings, predictions=first, progress=False)
    replay(data, small_settings, predictions=second, progress=False)
    assert first.read_bytes() == second.read_bytes()


def test_cli_seed_overrides_the_config(stream_lines: list[str], write_jsonl, small_config: Path,
                                       tmp_path: Path) -> None:
    data, report = write_jsonl(stream_lines[:40]), tmp_path / "r.json"
    assert main(["replay", str(data), "--config", str(small_config), "--seed", "7", "--report", str(report)]) == 0
    assert json.loads(report.read_text())["seed"] == 7


def test_replay_of_only_invalid_lines_reports_them(write_jsonl, small_settings: Settings, tmp_path: Path) -> None:
    data = write_jsonl(["nope", "[]", ""])
    result = replay(data, small_settings, predictions=tmp_path / "p.jsonl", progress=False)
    assert (result.samples, result.valid, result.accuracy) == (3, 0, None)
    assert result.invalid == {"not_json": 2, "not_object": 1}
    assert [r["id"] for r in read_jsonl(tmp_path / "p.jsonl")] == ["1", "2", "3"]


def test_a_line_over_the_size_limit_is_rejected_with_its_whole_size(stream_lines: list[str], write_jsonl,
                                                                   small_settings: Settings, tmp_path: Path) -> None:
    # Read in bounded pieces (a JSON array file given as JSONL would be one line of gigabytes), reported in full.
    huge = '{"id": "big", "features": [' + "0," * 750_000 + "0]}"
    data = write_jsonl([stream_lines[0], huge, stream_lines[1]])
    result = replay(data, small_settings, predictions=tmp_path / "p.jsonl", progress=False)
    assert (result.samples, result.valid, result.invalid) == (3, 2, {"too_large": 1})
    row = read_jsonl(tmp_path / "p.jsonl")[1]
    assert (row["id"], row["error"]) == ("2", "too_large")  # its own id is past what is read
    assert row["detail"] == f"record is {len(huge)} bytes, the limit is {small_settings.kafka.max_message_bytes}"


def test_replay_of_only_invalid_lines_with_save_model_writes_the_report_and_exits_2(
        write_jsonl, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_jsonl(["nope", '{"features": []}'])
    report, model = tmp_path / "r.json", tmp_path / "model"
    assert main(["replay", str(data), "--report", str(report), "--save-model", str(model)]) == 2
    err = capsys.readouterr().err
    assert one_line(err) and "no valid sample" in err
    assert json.loads(report.read_text())["valid"] == 0  # nothing lost: the reasons are in the report
    assert not list(model.glob("ckpt-*"))


def test_saved_model_embeds_like_the_learner(stream_lines: list[str], write_jsonl, small_settings: Settings,
                                             small_config: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from streamlearn.learner import Learner

    data = write_jsonl(stream_lines)
    learner = Learner.from_settings(small_settings.learner)
    replay(data, small_settings, save_model=tmp_path / "model", learner=learner, progress=False)

    out = tmp_path / "emb.jsonl"
    assert main(["embed", "--model", str(tmp_path / "model"), str(data), "--output", str(out)]) == 0
    rows = read_jsonl(out)
    assert len(rows) == len(stream_lines)
    valid = [(n, json.loads(raw)) for n, raw in enumerate(stream_lines, 1) if expected_row(n, raw) is not None]
    expected = learner.embed(np.array([row["features"] for _, row in valid], dtype=np.float32))
    got = np.array([rows[n - 1]["embedding"] for n, _ in valid], dtype=np.float32)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    for n, row in valid:
        assert rows[n - 1]["id"] == row.get("id", str(n))
        assert rows[n - 1]["model_version"] == learner.model_version
    for n, raw in enumerate(stream_lines, 1):
        if raw in INVALID_BY_LINE:
            assert rows[n - 1]["embedding"] is None and rows[n - 1]["error"] == INVALID_BY_LINE[raw]

    capsys.readouterr()
    assert main(["embed", "--model", str(tmp_path / "model"), str(data)]) == 0  # to stdout
    assert capsys.readouterr().out.splitlines() == out.read_text().splitlines()


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["replay"],
        ["replay", "x.jsonl", "--bogus"],
        ["replay", "x.jsonl", "--seed", "-1"],
        ["replay", "x.jsonl", "--seed", "abc"],
        ["embed", "x.jsonl"],
        ["produce"],
        ["produce", "x.jsonl", "--demo"],
        ["produce", "--demo", "--rate", "0"],
        ["produce", "--demo", "--rate", "1e-300"],  # a wait no clock can represent
        ["produce", "--demo", "--count", "0"],
        ["produce", "--demo", "--count", "500000000"],  # drawn up front, it took 8.4 GB before sending one
        ["produce", "--demo", "--count", "99999999999999999999999999"],  # was exit 1 from numpy
        ["embed", "--model", "m", "x.jsonl", "--batch-size", "100000000"],
    ],
)
def test_bad_usage_exits_2_with_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert one_line(captured.err) and captured.err.startswith("streamlearn: error:")
    assert captured.out == ""


def test_missing_input_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", str(tmp_path / "missing.jsonl")]) == 2
    err = capsys.readouterr().err
    assert one_line(err) and "missing.jsonl" in err
    assert main(["embed", "--model", str(tmp_path), str(tmp_path / "missing.jsonl")]) == 2
    assert one_line(capsys.readouterr().err)


def test_replay_and_embed_read_a_pipe_like_a_file(stream_lines: list[str], write_jsonl, small_config: Path,
                                                  tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`cat x.jsonl | streamlearn replay /dev/stdin`: a pipe gives the same predictions as the file."""
    import os
    import threading

    def through_pipe(name: str) -> Path:
        fifo = tmp_path / name
        os.mkfifo(fifo)
        writer = threading.Thread(target=lambda: fifo.write_text("\n".join(stream_lines) + "\n", encoding="utf-8"),
                                  daemon=True)
        writer.start()
        return fifo

    data = write_jsonl(stream_lines)
    from_file, from_pipe, model = tmp_path / "file.jsonl", tmp_path / "pipe.jsonl", tmp_path / "model"
    assert main(["replay", str(data), "--config", str(small_config), "--predictions", str(from_file),
                 "--save-model", str(model)]) == 0
    assert main(["replay", str(through_pipe("replay-in")), "--config", str(small_config),
                 "--predictions", str(from_pipe)]) == 0
    assert read_jsonl(from_pipe) == read_jsonl(from_file)
    embedded = tmp_path / "embedded.jsonl"
    assert main(["embed", "--model", str(model), str(through_pipe("embed-in")), "--output", str(embedded)]) == 0
    assert len(read_jsonl(embedded)) == len(stream_lines)
    capsys.readouterr()


def test_unloadable_model_exits_1(write_jsonl, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_jsonl(['{"features": [1, 2]}'])
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / checkpoint.MODEL_FILE).write_bytes(b"not a model")
    assert main(["embed", "--model", str(broken), str(data)]) == 1
    assert one_line(capsys.readouterr().err)


UNWRITABLE = Path("/proc/streamlearn-no-such-folder")  # a folder no one can create, not even root


def test_an_unwritable_output_is_bad_usage_named_by_its_flag(write_jsonl, tmp_path: Path, capsys) -> None:
    # It was exit 1 with the name of an internal probe file; `run` already gives 2 for an unwritable checkpoint.dir.
    data = write_jsonl(['{"features": [1, 2]}'])
    assert main(["replay", str(data), "--predictions", str(UNWRITABLE / "preds.jsonl")]) == 2
    err = capsys.readouterr().err
    assert one_line(err) and (f"--predictions {UNWRITABLE / 'preds.jsonl'}: cannot create {UNWRITABLE}: "
                              "/proc is not writable") in err
    assert "write-check" not in err


def test_an_unwritable_output_fails_before_the_replay_runs(write_jsonl, tmp_path: Path, capsys) -> None:
    data = write_jsonl(['{"features": [1, 2], "label": "a"}'] * 50)
    predictions = tmp_path / "out" / "preds.jsonl"
    report = UNWRITABLE / "r.json"
    code = main(["replay", str(data), "--predictions", str(predictions), "--report", str(report)])
    assert code == 2 and one_line(capsys.readouterr().err)
    assert not predictions.parent.exists()  # nothing was replayed, and no folder made for it


FULL = Path("/dev/full")  # every write fails with ENOSPC, as on a full disk


@pytest.mark.skipif(not FULL.exists(), reason="needs /dev/full (Linux)")
@pytest.mark.parametrize("flag", ["--predictions", "--report"])
def test_a_full_disk_under_a_replay_output_is_named(write_jsonl, flag: str, capsys) -> None:
    # The write error named no file: "No space left on device", whichever output it was.
    data = write_jsonl(['{"features": [1, 2], "label": "a"}'] * 50)
    assert main(["replay", "--log-level", "WARNING", str(data), flag, str(FULL)]) == 1
    err = capsys.readouterr().err
    assert one_line(err) and f"{FULL}: No space left on device" in err


@pytest.mark.skipif(not FULL.exists(), reason="needs /dev/full (Linux)")
def test_a_full_disk_under_the_embed_output_is_named(stream_lines: list[str], write_jsonl, small_config: Path,
                                                      tmp_path: Path, capsys) -> None:
    data = write_jsonl(stream_lines)
    model = tmp_path / "model"
    assert main(["replay", str(data), "--config", str(small_config), "--save-model", str(model)]) == 0
    capsys.readouterr()
    assert main(["embed", "--model", str(model), str(data), "--output", str(FULL)]) == 1
    err = capsys.readouterr().err
    assert one_line(err) and f"{FULL}: No space left on device" in err


@pytest.mark.skipif(not FULL.exists(), reason="needs /dev/full (Linux)")
def test_a_full_stdout_under_the_replay_summary_is_named(write_jsonl, tmp_path: Path) -> None:
    data = write_jsonl(['{"features": [1, 2], "label": "a"}'] * 20)
    with FULL.open("w") as full:
        done = subprocess.run([sys.executable, "-m", "streamlearn", "--log-level", "WARNING", "replay", str(data)],
                              stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    assert done.returncode == 1 and one_line(done.stderr), done.stderr
    assert "<stdout>: No space left on device" in done.stderr


def test_replay_refuses_to_save_into_the_directory_a_daemon_holds(stream_lines: list[str], write_jsonl,
                                                                   tmp_path: Path, capsys) -> None:
    # It wrote a checkpoint there, pointed LATEST at it and pruned the daemon's oldest: the daemon's next
    # start restored the replay's model. Refused before the replay runs.
    held = tmp_path / "ckpt"
    held.mkdir()
    daemon = DirectoryLock(held, "checkpoint.dir")  # what a running daemon holds
    try:
        predictions = tmp_path / "p.jsonl"
        code = main(["replay", str(write_jsonl(stream_lines)), "--predictions", str(predictions),
                     "--save-model", str(held)])
        err = capsys.readouterr().err
        assert code == 2 and one_line(err)
        assert f"--save-model {held} is in use by another streamlearn process (pid {os.getpid()} on " in err
        assert not predictions.exists() and sorted(p.name for p in held.iterdir()) == [".lock"]
    finally:
        daemon.release()
    assert main(["replay", str(write_jsonl(stream_lines)), "--save-model", str(held)]) == 0
    assert checkpoint.latest_path(held) is not None
    capsys.readouterr()


def test_a_failed_replay_leaves_no_empty_output_folder(write_jsonl, tmp_path: Path, capsys) -> None:
    # The output check created the folders before the config was read or the input replayed.
    data = write_jsonl(['not json'] * 3)
    model = tmp_path / "new" / "model"
    assert main(["replay", str(data), "--save-model", str(model)]) == 2  # no valid sample: nothing to save
    assert not (tmp_path / "new").exists()
    config = tmp_path / "bad.yaml"
    config.write_text("learner: {lr: -1}\n")
    predictions = tmp_path / "preds" / "p.jsonl"
    assert main(["replay", str(data), "--config", str(config), "--predictions", str(predictions)]) == 2
    assert not predictions.parent.exists()
    capsys.readouterr()


def test_real_process_never_prints_a_traceback(tmp_path: Path) -> None:
    """The installed entry point: exit 2 for usage, 1 for runtime failures, one stderr line each."""
    usage = subprocess.run([sys.executable, "-m", "streamlearn", "replay", str(tmp_path / "no.jsonl")],
                           capture_output=True, text=True, timeout=120)
    assert usage.returncode == 2 and one_line(usage.stderr), usage.stderr
    data = tmp_path / "in.jsonl"
    data.write_text('{"features": [1]}\n')
    damaged = tmp_path / "model"
    damaged.mkdir()
    (damaged / "model.safetensors").write_text("cut short by a full disk")  # a model folder whose model is damaged
    runtime = subprocess.run([sys.executable, "-m", "streamlearn", "embed", "--model", str(damaged), str(data)],
                             capture_output=True, text=True, timeout=120)
    assert runtime.returncode == 1 and one_line(runtime.stderr), runtime.stderr
    assert "is it a streamlearn checkpoint?" in runtime.stderr


@pytest.mark.parametrize("extra", [["--predictions", "IN"], ["--predictions", "P", "--report", "P"],
                                   ["--predictions", "DIR"]])
def test_replay_refuses_outputs_that_would_overwrite_the_input_or_each_other(tmp_path: Path, extra, capsys) -> None:
    data = tmp_path / "in.jsonl"
    data.write_text('{"features": [1], "label": "a"}\n')
    names = {"IN": str(data), "P": str(tmp_path / "out.json"), "DIR": str(tmp_path)}
    assert main(["replay", str(data), *[names.get(a, a) for a in extra]]) == 2
    assert one_line(capsys.readouterr().err)
    assert data.read_text() == '{"features": [1], "label": "a"}\n'


@pytest.mark.parametrize("flag", ["--report", "--predictions", "--save-model"])
def test_an_output_below_a_file_is_a_usage_error(write_jsonl, tmp_path: Path, flag: str, capsys) -> None:
    data = write_jsonl(['{"features": [1, 2], "label": "a"}'])
    a_file = tmp_path / "plain-file"
    a_file.write_text("x")
    assert main(["replay", str(data), flag, str(a_file / "sub" / "out.json")]) == 2
    err = capsys.readouterr().err
    assert one_line(err) and "is a file, not a folder" in err


def test_embed_refuses_a_model_folder_without_a_model(tmp_path: Path, capsys) -> None:
    data = tmp_path / "in.jsonl"
    data.write_text('{"features": [1]}\n')
    assert main(["embed", "--model", str(tmp_path), str(data)]) == 2
    assert "holds no checkpoint or saved model" in capsys.readouterr().err


def test_embed_refuses_a_model_file_that_is_not_a_model(tmp_path: Path, capsys) -> None:
    data = tmp_path / "in.jsonl"
    data.write_text('{"features": [1]}\n')
    assert main(["embed", "--model", str(data), str(data), "--output", str(tmp_path / "out.jsonl")]) == 2
    err = capsys.readouterr().err
    assert one_line(err) and "is not a streamlearn model" in err
    assert not (tmp_path / "out.jsonl").exists()  # refused before anything was written
