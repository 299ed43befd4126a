"""Corpus-scale predict, link and select on a real two-node Ray cluster on loopback (a head
and one worker node, `ray start --block`, stopped at the end), with the tiny models:
the same spans, links and batch as the single-process commands; Parquet read back with
DuckDB; a malformed row in the rejects; a restarted job resuming from its done blocks;
`select --pool --import-to-studio` into the real Label Studio the tests start."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from link_rows import link_input, link_keys
from sample_project import reference_project_toml

ray = pytest.importorskip("ray", reason="the skillloop[ray] extra (make install) is missing")
duckdb = pytest.importorskip("duckdb")

from backend.cli import main  # noqa: E402
from training.linker import LinkerSettings  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RAY = Path(sys.executable).parent / "ray"
MAP = ["BUS=Business", "TECHNOLOGY=Technology", "TECHNICAL=Technical", "SOFT=Soft"]
TEXT = "team work and communication skills for the analyst , excel or spark python sql"
TAXONOMY = """id,preferred_label,alt_labels,type,description
k8s,kubernetes,k8s|container orchestration,S,
py,python,python programming,K,
sql,sql,structured query language|databases,K,
talk,communication,communication skills,T,
"""
PROJECT_TOML = reference_project_toml("pool")

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def client_port() -> int | None:
    """The head's Ray Client server port (`ray://`), where grpcio (`ray[client]`) is here."""
    try:
        import grpc  # noqa: F401
    except ImportError:
        return None
    return free_port()


@pytest.fixture(scope="module")
def cluster(client_port):
    """`127.0.0.1:PORT` of a head node and one worker node, one CPU and 100 MB of object
    store each; each `ray start --block` is stopped by its own process group at the end.
    The head serves Ray Client on `client_port` where grpcio is installed.

    A driver given 127.0.0.1 connects to this machine's outward address unless Ray's
    "no multi-node cluster" flag is off (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, read when
    ray is imported): patched in this process, whose commands are the drivers."""
    from ray._private import ray_constants

    patch = pytest.MonkeyPatch()
    patch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
    port = free_port()
    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = os.environ | {"PYTHONPATH": path, "RAY_USAGE_STATS_ENABLED": "0"}
    common = ["--num-cpus", "1", "--object-store-memory", str(100 * 2**20), "--block"]
    common += ["--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
    head = [str(RAY), "start", "--head", "--port", str(port), "--include-dashboard", "false"]
    head += ["--temp-dir", str(temp)]
    if client_port is not None:
        head += ["--ray-client-server-port", str(client_port)]
    worker = [str(RAY), "start", "--address", f"127.0.0.1:{port}"]
    started = []
    try:
        for command in (head, worker):
            log = open(temp / f"start-{len(started)}.log", "w")  # noqa: SIM115
            started.append(
                subprocess.Popen(
                    command + common, env=env, stdout=log, stderr=log, start_new_session=True
                )
            )
            _wait_for_nodes(f"127.0.0.1:{port}", len(started), temp)
        yield f"127.0.0.1:{port}"
    finally:
        for process in started:  # `ray start --block` stops its node's processes
            os.killpg(process.pid, signal.SIGTERM)
        stop = time.monotonic() + 3  # it drains for up to 30 s: a throwaway node need not
        for process in started:
            try:
                process.wait(timeout=max(0.1, stop - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # its group: raylet, GCS, workers
                process.wait()
        shutil.rmtree(temp, ignore_errors=True)
        patch.undo()


def _wait_for_nodes(address: str, count: int, temp: Path) -> None:
    """Until each `ray start` says its node runs (it prints READY, then blocks): a file
    read, not a probing driver (which costs seconds of imports on loaded cores)."""
    deadline = time.monotonic() + 90
    logs = [temp / f"start-{i}.log" for i in range(count)]
    while time.monotonic() < deadline:
        if all(READY in log.read_text() for log in logs):
            return
        time.sleep(0.5)
    tails = " | ".join(log.read_text()[-300:] for log in logs)
    raise AssertionError(f"the Ray cluster at {address} did not reach {count} nodes: {tails}")


READY = "This command will now block forever"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """60 posts: 30 in a JSONL file (with a malformed line), 30 in Parquet (row groups of
    10); `all.jsonl` holds the 60 good rows for the single-process commands."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path_factory.mktemp("corpus")
    words = TEXT.split()
    rows = [{"id": f"p{i}", "text": " ".join(words[i % 7 :] * (1 + i % 4))} for i in range(60)]
    inputs = folder / "in"
    inputs.mkdir()
    lines = [json.dumps(r) for r in rows[:30]]
    lines.insert(12, '{"id": "broken", "text": ')  # line 13 of a.jsonl
    (inputs / "a.jsonl").write_text("\n".join(lines) + "\n")
    pq.write_table(pa.Table.from_pylist(rows[30:]), inputs / "b.parquet", row_group_size=10)
    (folder / "all.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "skills.csv").write_text(TAXONOMY)
    return folder, rows


@pytest.fixture(scope="module")
def linker_folder(tmp_path_factory, tiny_encoder):
    folder = tmp_path_factory.mktemp("linker")
    LinkerSettings(encoder=str(tiny_encoder), threshold=0.0).save(folder)
    return folder


def span_keys(rows):
    return sorted((r[0], r[1], r[2], r[3], r[4]) for r in rows)


def test_predict_and_link_on_two_nodes_match_one_process_and_resume(
    cluster, corpus, linker_folder, tiny_reference_model, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("SKILLLOOP_STATE_DIR", str(tmp_path / "state"))
    folder, rows = corpus
    common = ["--model", str(tiny_reference_model), "--label-map", *MAP, "--no-progress"]
    common += ["--precision", "fp32", "--link", "--taxonomy", str(folder / "skills.csv")]
    common += ["--linker", str(linker_folder)]
    alone = tmp_path / "alone.jsonl"
    single = ["--input", str(folder / "all.jsonl"), "--output", str(alone)]
    assert main(["predict", *common, *single]) == 0
    expected = [
        (row["id"], s["start"], s["end"], s["label"], s["taxonomy_id"])
        for row in map(json.loads, alone.read_text().splitlines())
        for s in row["spans"]
    ]
    assert expected and all(key[4] for key in expected)  # threshold 0: every span linked

    out = tmp_path / "out"
    on_ray = [*common, "--input", str(folder / "in"), "--output", str(out), "--block-rows", "8"]
    on_ray += ["--ray-address", cluster, "--workers", "2", "--format", "label-studio"]
    assert main(["predict", *on_ray]) == 0
    err = capsys.readouterr().err
    assert "with 2 actor(s)" in err and "1 rejected rows" in err

    spans = duckdb.sql(
        f"select post_id, start, \"end\", label, taxonomy_id from '{out}/spans/*.parquet'"
    ).fetchall()
    assert span_keys(spans) == span_keys(expected)
    posts = duckdb.sql(
        f"select post_id, model_version, task_score, spans from '{out}/posts/*.parquet'"
    ).fetchall()
    assert sorted(p[0] for p in posts) == sorted(r["id"] for r in rows)
    assert all(p[1].startswith(tiny_reference_model.name + "@") for p in posts)
    counts = duckdb.sql(
        f"select taxonomy_label, count(*) from '{out}/spans/*.parquet' group by 1"
    ).fetchall()
    assert sum(c for _, c in counts) == len(expected)
    [reject] = map(json.loads, (out / "rejects.jsonl").read_text().splitlines())
    assert reject["file"].endswith("a.jsonl") and reject["row"] == 13
    tasks = json.loads((out / "label-studio.json").read_text())
    assert [t["data"]["id"] for t in tasks] == [r["id"] for r in rows]  # input order
    regions = sum(len(t["predictions"][0]["result"]) for t in tasks)
    assert regions == len(expected)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["posts"] == 60 and summary["rejects"] == 1 and summary["blocks"] == 7

    # a job killed before its last blocks: their done markers (and outputs) are missing
    markers = sorted((out / "done").glob("*.json"))
    for marker in markers[-2:]:
        marker.unlink()
        (out / "posts" / f"{marker.stem}.parquet").unlink()
    assert main(["predict", *on_ray]) == 0
    err = capsys.readouterr().err
    assert "tagging 2 blocks" in err and "5 blocks done before" in err
    again = duckdb.sql(
        f"select post_id, start, \"end\", label, taxonomy_id from '{out}/spans/*.parquet'"
    ).fetchall()
    assert span_keys(again) == span_keys(expected)
    assert json.loads((out / "summary.json").read_text())["posts"] == 60


def test_predict_over_ray_client_runs_its_driver_on_the_cluster(
    cluster, client_port, corpus, linker_folder, tiny_reference_model, tmp_path, monkeypatch
):
    """`--ray-address ray://HOST:PORT`: the driver goes to the cluster as a task (Ray Data
    fails over Ray Client), and the folder it writes holds the single-process spans."""
    if client_port is None:
        pytest.skip("Ray Client needs grpcio (pip install 'ray[client]')")
    monkeypatch.setenv("SKILLLOOP_STATE_DIR", str(tmp_path / "state"))
    folder, rows = corpus
    common = ["--model", str(tiny_reference_model), "--label-map", *MAP, "--no-progress"]
    common += ["--precision", "fp32", "--link", "--taxonomy", str(folder / "skills.csv")]
    common += ["--linker", str(linker_folder)]
    alone = tmp_path / "alone.jsonl"
    assert (
        main(["predict", *common, "--input", str(folder / "all.jsonl"), "--output", str(alone)])
        == 0
    )
    expected = [
        (row["id"], s["start"], s["end"], s["label"], s["taxonomy_id"])
        for row in map(json.loads, alone.read_text().splitlines())
        for s in row["spans"]
    ]
    assert expected

    out = tmp_path / "out"
    on_ray = [*common, "--input", str(folder / "in"), "--output", str(out), "--block-rows", "8"]
    on_ray += ["--ray-address", f"ray://127.0.0.1:{client_port}", "--workers", "2"]
    assert main(["predict", *on_ray]) == 0
    spans = duckdb.sql(
        f"select post_id, start, \"end\", label, taxonomy_id from '{out}/spans/*.parquet'"
    ).fetchall()
    assert span_keys(spans) == span_keys(expected)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["posts"] == 60 and summary["rejects"] == 1 and summary["blocks"] == 7


def test_a_failed_ray_client_connection_leaves_the_next_job_able_to_run(
    cluster, client_port, corpus, tiny_reference_model, tmp_path, monkeypatch, capsys
):
    """A ray:// connection that fails (here: nothing listens) is a one-line error, and does
    not leave this process in Ray Client mode, where the next job's ray.init would fail
    with a bare AssertionError (seen in CI after the head's client server failed to start)."""
    if client_port is None:
        pytest.skip("Ray Client needs grpcio (pip install 'ray[client]')")
    from ray.util.client import worker

    monkeypatch.setattr(worker, "INITIAL_TIMEOUT_SEC", 1)  # Ray's 30 s of retries, shorter
    monkeypatch.setenv("SKILLLOOP_STATE_DIR", str(tmp_path / "state"))
    folder, _ = corpus
    common = ["--model", str(tiny_reference_model), "--label-map", *MAP, "--no-progress"]
    common += ["--precision", "fp32", "--input", str(folder / "in"), "--block-rows", "8"]
    nowhere = f"ray://127.0.0.1:{free_port()}"
    failed = ["predict", *common, "--output", str(tmp_path / "a"), "--ray-address", nowhere]
    assert main(failed) == 2
    assert f"could not connect to Ray at {nowhere}" in capsys.readouterr().err
    out = tmp_path / "b"
    assert main(["predict", *common, "--output", str(out), "--ray-address", cluster]) == 0
    assert json.loads((out / "summary.json").read_text())["posts"] == 60


def test_link_on_two_nodes_matches_one_process(
    cluster, corpus, linker_folder, tiny_reference_model, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("SKILLLOOP_STATE_DIR", str(tmp_path / "state"))
    folder, rows = corpus
    inputs, good = link_input(tmp_path, rows)
    (tmp_path / "all.jsonl").write_text("".join(json.dumps(r) + "\n" for r in good))
    common = ["--taxonomy", str(folder / "skills.csv"), "--linker", str(linker_folder)]
    common += ["--model", str(tiny_reference_model), "--no-progress"]
    alone = tmp_path / "alone.jsonl"
    assert (
        main(["link", *common, "--input", str(tmp_path / "all.jsonl"), "--output", str(alone)]) == 0
    )
    expected = [json.loads(line) for line in alone.read_text().splitlines()]
    assert sum(len(r.get("spans") or []) for r in expected) > 10  # the model tagged spans

    out = tmp_path / "out"
    on_ray = ["--input", str(inputs), "--output", str(out), "--block-rows", "4"]
    assert main(["link", *common, *on_ray, "--ray-address", cluster, "--workers", "2"]) == 0
    err = capsys.readouterr().err
    assert "linking 7 blocks" in err and "with 2 actor(s)" in err and "1 rejected rows" in err
    linked = [json.loads(line) for line in (out / "linked.jsonl").read_text().splitlines()]
    assert [r["id"] for r in linked] == [r["id"] for r in expected]  # input order
    for got, want in zip(linked, expected, strict=True):
        assert link_keys(got)[:1] == link_keys(want)[:1]
        if "span" not in got and "text_link" not in got:
            assert link_keys(got) == link_keys(want)  # the same spans, the same entries
            assert [s["label"] for s in got["spans"]] == [s["label"] for s in want["spans"]]
        else:
            assert link_keys(got)[1] == link_keys(want)[1]
            assert link_keys(got)[2] == pytest.approx(link_keys(want)[2], abs=1e-3)
    [reject] = map(json.loads, (out / "rejects.jsonl").read_text().splitlines())
    assert reject["row"] == 4 and "within the text" in reject["problem"]
    spans = duckdb.sql(f"select post_id, taxonomy_id from '{out}/spans/*.parquet'").fetchall()
    want = [(r["id"], r["taxonomy_id"]) for r in expected if "span" in r]
    want += [(r["id"], s["taxonomy_id"]) for r in expected for s in r.get("spans") or []]
    assert sorted(spans) == sorted(want)

    marker = sorted((out / "done").glob("*.json"))[0]  # a job killed before one block
    marker.unlink()
    assert main(["link", *common, *on_ray, "--ray-address", cluster, "--workers", "2"]) == 0
    assert "linking 1 blocks" in capsys.readouterr().err
    assert (out / "linked.jsonl").read_text().splitlines() == list(map(json.dumps, linked))


class StubStudio:
    """What `--import-to-studio` asks of Label Studio's client, recorded."""

    url = "http://studio.test"

    def __init__(self):
        self.imported: list = []

    def import_tasks(self, project_id, tasks):
        from labeling.studio.client import ImportResult

        self.imported += [(project_id, task) for task in tasks]
        return ImportResult(len(tasks), 0, [])


def test_select_from_a_pool_on_two_nodes_picks_what_one_process_picks(
    cluster, client_port, corpus, tiny_reference_model, tmp_path, monkeypatch, capsys
):
    from backend.cli import select_pool

    folder, rows = corpus
    project = tmp_path / "projects" / "pool"
    project.mkdir(parents=True)
    (project / "project.toml").write_text(PROJECT_TOML)
    # p5 is already a task in Label Studio: the single-process pool is the rest
    kept = [r for r in rows if r["id"] != "p5"]
    (project / "posts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    state = tmp_path / "state"
    from labeling.state import ProjectState

    with ProjectState(state / "pool").store():  # nothing labelled yet
        pass
    args = ["select", "--project", str(project), "--model", str(tiny_reference_model)]
    args += ["--state-dir", str(state), "--json", "-n", "3", "--strategy", "mnlp+diverse"]
    assert main(args) == 0
    alone = json.loads(capsys.readouterr().out)

    studio = StubStudio()
    monkeypatch.setattr(select_pool, "_studio_target", lambda a, p: (studio, 7, {"id:p5"}))
    pool = ["--pool", str(folder / "in"), "--ray-address", cluster, "--workers", "2"]
    assert main([*args, *pool, "--block-rows", "8", "--import-to-studio"]) == 0
    out = capsys.readouterr()
    on_ray = json.loads(out.out)
    assert len(on_ray["batch"]) == 3
    assert [r["id"] for r in on_ray["batch"]] == [r["id"] for r in alone["batch"]]
    assert [r["task_score"] for r in on_ray["batch"]] == [r["task_score"] for r in alone["batch"]]
    assert "61 rows in 7 blocks: 1 rejected, 1 already labelled or in Label Studio" in out.err
    assert "Label Studio project 7: created 3 tasks with predictions" in out.err
    assert [t["data"]["post_id"] for _, t in studio.imported] == [r["id"] for r in alone["batch"]]
    for (project_id, task), row in zip(studio.imported, on_ray["batch"], strict=True):
        [prediction] = task["predictions"]
        assert project_id == 7 and prediction["score"] == round(row["task_score"], 6)
        assert prediction["model_version"].startswith(tiny_reference_model.name + "@")
        for region in prediction["result"]:
            value = region["value"]
            assert task["data"]["text"][value["start"] : value["end"]] == value["text"]

    if client_port is None:
        return  # Ray Client needs grpcio
    # over Ray Client the scoring runs on the cluster, the import here (into the stub)
    studio = StubStudio()
    pool[3] = f"ray://127.0.0.1:{client_port}"
    assert main([*args, *pool, "--block-rows", "8", "--import-to-studio"]) == 0
    out = capsys.readouterr()
    assert [r["id"] for r in json.loads(out.out)["batch"]] == [r["id"] for r in alone["batch"]]
    assert [t["data"]["post_id"] for _, t in studio.imported] == [r["id"] for r in alone["batch"]]


@pytest.mark.studio
def test_select_from_a_pool_into_a_real_label_studio_skips_what_is_there(
    cluster, corpus, studio, tiny_reference_model, tmp_path, monkeypatch, capsys
):
    """`select --pool --import-to-studio` against the Label Studio the tests start: the
    batch becomes tasks with predictions in the project titled as ours; a post already
    there by text, and on a second run the first batch by post id, are not picked again."""
    from labeling.project import load_project
    from labeling.state import ProjectState
    from labeling.studio.client import StudioClient

    folder, rows = corpus
    project_dir = tmp_path / "projects" / "pool"
    project_dir.mkdir(parents=True)
    toml = reference_project_toml("pool", title=f"pool {os.getpid()}")
    (project_dir / "project.toml").write_text(toml)
    (project_dir / "posts.jsonl").write_text("")
    project = load_project(str(project_dir))
    client = StudioClient(studio.url, studio.token)
    ref = client.ensure_project(project.title, project.labeling_config)
    client.import_tasks(ref.id, [{"text": rows[5]["text"]}])  # p5, by text: no post id
    monkeypatch.setenv("LABEL_STUDIO_URL", studio.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", studio.token)
    state = tmp_path / "state"
    with ProjectState(state / "pool").store():
        pass
    args = ["select", "--project", str(project_dir), "--model", str(tiny_reference_model)]
    args += ["--state-dir", str(state), "--json", "-n", "3", "--strategy", "mnlp"]
    args += ["--pool", str(folder / "in"), "--ray-address", cluster, "--workers", "2"]
    args += ["--block-rows", "8", "--import-to-studio"]

    texts = {r["id"]: r["text"] for r in rows}
    there = {rows[5]["text"]}  # texts repeat every 28 posts: p33 is p5's text too
    picked: list[str] = []
    for _ in range(2):
        assert main(args) == 0
        out = capsys.readouterr()
        batch = [r["id"] for r in json.loads(out.out)["batch"]]
        assert len(batch) == 3 and not {texts[p] for p in batch} & there
        skipped = sum(text in there for text in texts.values())
        assert f"1 rejected, {skipped} already labelled or in Label Studio" in out.err
        assert f"Label Studio project {ref.id}: created 3 tasks with predictions" in out.err
        picked += batch
        there |= {texts[p] for p in batch}
    assert len(set(picked)) == 6

    tasks = client.tasks(ref.id)
    assert len(tasks) == 7
    by_post = {t["data"].get("post_id"): t for t in tasks}
    assert set(by_post) == {None, *picked}
    for post in picked:
        task = by_post[post]
        assert task["data"]["text"] == texts[post]
        [prediction] = task["predictions"]
        assert prediction["model_version"].startswith(tiny_reference_model.name + "@")
        for region in prediction["result"]:
            value = region["value"]
            assert texts[post][value["start"] : value["end"]] == value["text"]
    assert any(by_post[post]["predictions"][0]["result"] for post in picked)
