"""The corpus input of the Ray commands without Ray: files, globs and folders planned into
blocks read one at a time, malformed rows as rejects naming file and row, block outputs
assembled and resumed (backend/corpus/sources.py, outputs.py)."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from backend.cli import main
from backend.corpus.outputs import BlockWriter, assemble, done_keys, remove_stale
from backend.corpus.sources import expand_inputs, plan_blocks, read_block


@pytest.fixture
def inputs(tmp_path):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    lines = [json.dumps({"id": f"a{i}", "text": f"python {i}"}) for i in range(7)]
    lines[2] = "{not json"
    lines[4] = json.dumps({"id": "no-text", "body": "x"})
    lines[5] = json.dumps(["a", "list"])
    lines.insert(3, "")  # blank lines are skipped, still counted as lines
    lines.append(json.dumps({"text": "long " * 10}))
    (folder / "a.jsonl").write_text("\n".join(lines) + "\n")
    rows = [{"id": f"b{i}", "text": f"sql {i}"} for i in range(5)]
    pq.write_table(pa.Table.from_pylist(rows), folder / "sub" / "b.parquet", row_group_size=2)
    (folder / "notes.txt").write_text("not an input")
    return folder


def test_folders_globs_and_files_expand_to_sorted_inputs(inputs):
    assert [p.name for p in expand_inputs([str(inputs)])] == ["a.jsonl", "b.parquet"]
    assert [p.name for p in expand_inputs([f"{inputs}/**/*.parquet"])] == ["b.parquet"]
    assert len(expand_inputs([str(inputs / "a.jsonl"), str(inputs)])) == 2  # each once
    with pytest.raises(FileNotFoundError, match="input not found"):
        expand_inputs([str(inputs / "missing.jsonl")])
    with pytest.raises(ValueError, match="no JSONL or Parquet files"):
        expand_inputs([f"{inputs}/*.csv"])
    with pytest.raises(ValueError, match="not a JSONL"):
        expand_inputs([str(inputs / "notes.txt")])


def test_blocks_cover_every_row_once_and_rejects_name_file_and_row(inputs):
    blocks = list(plan_blocks(expand_inputs([str(inputs)]), block_rows=3))
    assert [(b.kind, b.first_row) for b in blocks] == [
        ("jsonl", 1),
        ("jsonl", 4),
        ("jsonl", 7),
        ("parquet", 1),
        ("parquet", 3),
        ("parquet", 5),
    ]
    assert len({b.key for b in blocks}) == len(blocks)
    rows = [row for block in blocks for row in read_block(block, max_chars=20)]
    good = [r.data.get("id", r.number) for r in rows if r.data]
    assert good == ["a0", "a1", "a3", "a6", 9, "b0", "b1", "b2", "b3", "b4"]
    rejects = [(r.number, r.problem) for r in rows if r.data is None]
    assert rejects == [
        (3, "not valid JSON (Expecting property name enclosed in double quotes)"),
        (6, 'no "text" string'),
        (7, "not a JSON object"),
    ]
    assert all(r.file.endswith("a.jsonl") for r in rows if r.data is None)
    [cut] = [r for r in rows if r.number == 9 and r.file.endswith("a.jsonl")]
    assert cut.data["text_cut_at"] == 20 and len(cut.data["text"]) == 20


def test_a_parquet_file_without_text_is_named(tmp_path):
    pq.write_table(pa.Table.from_pylist([{"body": "x"}]), tmp_path / "c.parquet")
    with pytest.raises(ValueError, match="no 'text' column"):
        list(plan_blocks([tmp_path / "c.parquet"]))


def test_block_outputs_resume_and_stale_blocks_go(inputs, tmp_path):
    out = tmp_path / "out"
    blocks = list(plan_blocks(expand_inputs([str(inputs)]), block_rows=3))
    for block in blocks[:3]:  # a job stopped after the JSONL file's three blocks
        writer = BlockWriter(out, block, studio=False)
        for row in read_block(block, 100):
            if row.data is None:
                writer.reject(row)
        writer.close()
    assert done_keys(out) == {b.key for b in blocks[:3]}
    (out / "posts" / "gone-0123456789ab-00000.parquet").write_bytes(b"")
    assert remove_stale(out, {b.key for b in blocks}) == 1
    summary = assemble(out, [b.key for b in blocks[:3]], studio=False)
    assert summary["rejects"] == 3 and summary["blocks"] == 3
    lines = (out / "rejects.jsonl").read_text().splitlines()
    assert [json.loads(line)["row"] for line in lines] == [3, 6, 7]


def test_ray_predict_bad_arguments_are_one_line_errors(tiny_reference_model, inputs, capsys):
    base = ["predict", "--model", str(tiny_reference_model), "--ray-address", "local"]
    assert main([*base, "--input", str(inputs)]) == 2  # --output - (stdout)
    assert "writes an --output folder" in capsys.readouterr().err
    assert main([*base, "--input", str(inputs / "x.jsonl"), "--output", "o"]) == 2
    assert "input not found" in capsys.readouterr().err
    bad = ["--input", str(inputs), "--output", str(inputs / "o"), "--block-rows", "0"]
    assert main([*base, *bad]) == 2
    assert "--block-rows must be at least 1" in capsys.readouterr().err


def test_ray_link_refuses_bad_arguments_before_loading_a_taxonomy(inputs, capsys, monkeypatch):
    import backend.cli.link as link_cli

    def no_loading(args):
        raise AssertionError("the taxonomy was loaded before the options were checked")

    monkeypatch.setattr(link_cli, "open_linker", no_loading)
    base = ["link", "--ray-address", "local", "--input", str(inputs)]
    assert main(base) == 2  # --output - (stdout)
    assert "writes an --output folder" in capsys.readouterr().err
    assert main([*base, "--output", str(inputs / "o"), "--workers", "0"]) == 2
    assert "--workers must be at least 1" in capsys.readouterr().err
    assert main([*base, "--output", str(inputs / "o"), "--block-rows", "0"]) == 2
    assert "--block-rows must be at least 1" in capsys.readouterr().err
    assert main([*base, "--output", str(inputs / "o"), "--ray-address", "nowhere"]) == 2
    assert "--ray-address takes local, auto" in capsys.readouterr().err


def test_ray_client_without_grpcio_says_what_to_install(
    tiny_reference_model, inputs, capsys, monkeypatch
):
    import importlib.util

    find_spec = importlib.util.find_spec

    def without_grpc(name, *args):
        return None if name == "grpc" else find_spec(name, *args)

    # an environment without grpcio (skillloop[ray] installs it: ray[data,client])
    monkeypatch.setattr(importlib.util, "find_spec", without_grpc)
    client = ["predict", "--model", str(tiny_reference_model), "--ray-address", "ray://h:10001"]
    assert main([*client, "--input", str(inputs), "--output", str(inputs / "o")]) == 2
    assert "pip install 'ray[client]'" in capsys.readouterr().err


def test_ray_link_bad_arguments_are_one_line_errors(inputs, capsys):
    base = ["link", "--taxonomy", str(inputs / "missing.csv"), "--input", str(inputs)]
    assert main([*base, "--ray-address", "h:1", "--output", str(inputs / "o")]) == 2
    assert "missing.csv" in capsys.readouterr().err  # the address is fine: the taxonomy
    assert main([*base, "--ray-address", "local"]) == 2  # --output - (stdout)
    assert "writes an --output folder" in capsys.readouterr().err
    assert main([*base, "--ray-address", "nowhere", "--output", str(inputs / "o")]) == 2
    assert "takes local, auto, HOST:PORT or ray://HOST:PORT" in capsys.readouterr().err
    assert main([*base, "--workers", "2"]) == 2
    assert "--workers takes effect with --ray-address" in capsys.readouterr().err


def test_a_client_server_that_does_not_start_is_tried_again_then_named(monkeypatch):
    """The head's per-client server exiting at start reaches the client as an
    initialization failure (a ZombieProcess traceback when it exits while the head checks
    on it): tried CLIENT_ATTEMPTS times, each failure undone, then one line naming it."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("grpc")
    from backend.corpus import engine

    calls = []

    def failing_init(address, **options):
        calls.append(address)
        raise ConnectionAbortedError(
            "Initialization failure from server:\nTraceback ... psutil.ZombieProcess: "
            "PID still exists but it's a zombie (pid=27591)"
        )

    shutdowns = []
    monkeypatch.setattr(ray, "init", failing_init)
    monkeypatch.setattr(ray, "shutdown", lambda: shutdowns.append(True))
    monkeypatch.setattr(engine.time, "sleep", lambda seconds: None)
    with pytest.raises(ValueError, match="could not connect to Ray at ray://h:1: Initial"):
        engine.on_cluster("ray://h:1", print)
    assert calls == ["ray://h:1"] * engine.CLIENT_ATTEMPTS
    assert len(shutdowns) == engine.CLIENT_ATTEMPTS
