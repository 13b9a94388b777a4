from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from api.cli import main

SAMPLE = Path(__file__).parent / "data" / "sample.ndjson"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[dict[str, object]]]:
    code = main(list(argv))
    out = capsys.readouterr().out
    return code, [json.loads(line) for line in out.splitlines() if line.strip()]


def test_ingest_then_stats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lake = str(tmp_path / "lake")
    code, summaries = run(capsys, "ingest", "--lake", lake, "-q", str(SAMPLE))
    assert code == 0
    assert summaries[0]["status"] == "SUCCEEDED"
    assert summaries[0]["datapoints_created"] == 22
    assert summaries[0]["failures"] == 0
    code, stats = run(capsys, "stats", "--lake", lake)
    assert code == 0
    assert stats[0]["tables"]["datapoints"] == 22
    assert stats[0]["tables"]["tags"] == 41
    assert stats[0]["tables"]["bboxes"] == 1


def test_ingest_reports_bad_records_and_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "bad.ndjson.gz"
    source.write_bytes(gzip.compress(b'{"type": "IMAGE"}\n{"type": 5}\n'))
    broken = tmp_path / "broken.gz"
    broken.write_bytes(gzip.compress(b'{"type": "IMAGE"}\n' * 100)[:-10])
    code, summaries = run(
        capsys, "ingest", "--lake", str(tmp_path / "lake"), "-q", str(source), str(broken)
    )
    assert code == 1
    assert summaries[0]["status"] == "SUCCEEDED"
    assert summaries[0]["errors"] == [
        {
            "line": 2,
            "field": "type",
            "reason": "must be one of ['AUDIO', 'IMAGE', 'TEXT', 'VIDEO'], got 5",
        }
    ]
    assert summaries[1]["status"] == "FAILED"


def test_missing_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ingest", "--lake", str(tmp_path), str(tmp_path / "nope.ndjson")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_shoal_lake_sets_the_default_lake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOAL_LAKE", str(tmp_path / "envlake"))
    result = subprocess.run(
        [sys.executable, "-m", "api.cli", "ingest", "-q", str(SAMPLE)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(result.stdout)["datapoints_created"] == 22
    assert (tmp_path / "envlake" / "datapoints" / "_delta_log").is_dir()


def test_select_sql_and_delete_commands(tmp_path, capsysbinary) -> None:  # type: ignore[no-untyped-def]

    lake = str(tmp_path / "lake")
    sample = str(Path(__file__).parent / "data" / "sample.ndjson")
    assert main(["ingest", "--lake", lake, "-q", sample]) == 0
    capsysbinary.readouterr()
    filters = json.dumps(
        [
            {"left": "tags.name", "op": "=", "right": "split"},
            {"left": "tags.value", "op": "=", "right": "val"},
        ]
    )
    assert (
        main(
            [
                "select",
                "--lake",
                lake,
                "--filters",
                filters,
                "--columns",
                "id",
                "metadata.uri",
                "--limit",
                "2",
            ]
        )
        == 0
    )
    rows = [json.loads(line) for line in capsysbinary.readouterr().out.splitlines()]
    assert len(rows) == 2 and set(rows[0]) == {"id", "uri"}
    assert (
        main(["sql", "--lake", lake, "SELECT count(*) AS n FROM datapoints", "--format", "json"])
        == 0
    )
    assert json.loads(capsysbinary.readouterr().out) == [{"n": 22}]
    assert (
        main(["select", "--lake", lake, "--filters", '[{"left": "x", "op": "=", "right": 1}]']) == 1
    )
    assert b"unknown column 'x'" in capsysbinary.readouterr().err
    assert main(["sql", "--lake", lake, "DROP TABLE datapoints"]) == 1
    assert b"only SELECT statements" in capsysbinary.readouterr().err
    assert main(["delete", "--lake", lake, "--filters", filters]) == 0
    deleted = json.loads(capsysbinary.readouterr().out)["deleted"]
    assert deleted >= 1
    assert main(["sql", "--lake", lake, "SELECT count(*) AS n FROM datapoints"]) == 0
    assert json.loads(capsysbinary.readouterr().out) == {"n": 22 - deleted}


def test_dataset_commands(tmp_path, capsysbinary) -> None:  # type: ignore[no-untyped-def]
    lake = str(tmp_path / "lake")
    sample = str(Path(__file__).parent / "data" / "sample.ndjson")
    assert main(["ingest", "--lake", lake, "-q", sample]) == 0
    capsysbinary.readouterr()

    def run(*argv: str) -> list[dict]:  # type: ignore[type-arg]
        assert main(["datasets", argv[0], "--lake", lake, *argv[1:]]) == 0
        return [json.loads(line) for line in capsysbinary.readouterr().out.splitlines()]

    dataset = run("create", "dogs")[0]["id"]
    val = json.dumps([{"left": "tags.value", "op": "=", "right": "val"}])
    added = run("add", "dogs", "--filters", val)[0]["added"]
    assert added > 0
    first = run("commit", "dogs", "-m", "val split")[0]
    assert first["committed"] and first["message"] == "val split"
    run("add", dataset, "--filters", "[]")
    second = run("commit", dataset)[0]
    history = run("history", "dogs")
    assert [v["id"] for v in history[1:]] == [second["id"], first["id"]]
    diff = run("diff", first["id"], second["id"])[0]
    assert len(diff["added"]) == 22 - added and diff["removed"] == []
    out = tmp_path / "frozen.ndjson"
    assert (
        run("export", first["id"], str(out), "--format", "ndjson", "--frozen")[0]["datapoints"]
        == added
    )
    assert len(out.read_text().splitlines()) == added
    assert run("checkout", "dogs", first["id"])[0] == {"checked_out": first["id"]}
    assert main(["maintain", "--lake", lake, "--retention-hours", "0"]) == 0
    reports = [json.loads(line) for line in capsysbinary.readouterr().out.splitlines()]
    assert {r["table"] for r in reports[:-1]} >= {"datapoints", "dataset_members"}
    assert reports[-1] == {"landing": {"deleted": 1, "kept": 0}}  # the ingested sample's file
    assert list((tmp_path / "lake" / "_landing").iterdir()) == []
    assert main(["datasets", "add", "--lake", lake, "dogs", "not-an-id"]) == 1
    assert b"must be UUIDs" in capsysbinary.readouterr().err


def test_client_side_commands(tmp_path, capsysbinary) -> None:  # type: ignore[no-untyped-def]
    from apitools import live_server  # type: ignore[import-not-found]

    from lake import Lake
    from lake.keys import ApiKeys

    lake = Lake(str(tmp_path / "lake"))
    _, key = ApiKeys(lake).create("acme")
    sample = str(Path(__file__).parent / "data" / "sample.ndjson")
    with live_server(lake) as url:
        remote = ["--endpoint", url, "--api-key", key]
        assert main(["upload", sample, "--wait", "-q", *remote]) == 0
        done = json.loads(capsysbinary.readouterr().out)
        assert done["status"] == "SUCCEEDED" and done["output"]["datapoints_created"] == 22
        assert main(["status", done["id"], *remote]) == 0
        assert json.loads(capsysbinary.readouterr().out)["status"] == "SUCCEEDED"
        filters = json.dumps([{"left": "tags.value", "op": "=", "right": "val"}])
        assert (
            main(["select", "--filters", filters, "--columns", "id", "metadata.uri", *remote]) == 0
        )
        rows = [json.loads(line) for line in capsysbinary.readouterr().out.splitlines()]
        assert rows and set(rows[0]) == {"id", "uri"}
        assert main(["sql", "SELECT count(*) AS n FROM datapoints", *remote]) == 0
        assert json.loads(capsysbinary.readouterr().out) == {"n": 22}
        assert main(["datasets", "create", "remote", *remote]) == 0
        capsysbinary.readouterr()
        assert main(["datasets", "add", "remote", "--filters", filters, *remote]) == 0
        assert json.loads(capsysbinary.readouterr().out)["added"] == len(rows)
        assert main(["datasets", "commit", "remote", "-m", "val", *remote]) == 0
        capsysbinary.readouterr()
        assert main(["datasets", "history", "remote", *remote]) == 0
        history = [json.loads(line) for line in capsysbinary.readouterr().out.splitlines()]
        assert [v["committed"] for v in history] == [False, True]
        assert main(["select", "--filters", "[{", *remote]) == 1
        assert b"not valid JSON" in capsysbinary.readouterr().err
        assert main(["sql", "SELECT 1", "--endpoint", url, "--api-key", "shoal_bad"]) == 1
        assert b"401" in capsysbinary.readouterr().err


def _miner_records(path: Path) -> str:
    records = [
        {
            "type": "IMAGE",
            "metadata": {"uri": f"s3://b/{i}.jpg"},
            "predictions": [
                {
                    "task_type": "CLASSIFICATION",
                    "model_name": "net",
                    "class_names": ["a", "b"],
                    "logits": [float(i), 0.0],
                    "embeddings": {"avgpool": [float(i), 1.0]},
                }
            ],
        }
        for i in range(5)
    ]
    path.write_text("\n".join(json.dumps(r) for r in records))
    return str(path)


def test_miner_commands(tmp_path, capsysbinary) -> None:  # type: ignore[no-untyped-def]
    lake = str(tmp_path / "lake")
    assert main(["ingest", "--lake", lake, "-q", _miner_records(tmp_path / "m.ndjson")]) == 0
    capsysbinary.readouterr()

    def run(*argv: str, code: int = 0) -> list[dict]:  # type: ignore[type-arg]
        assert main(["miners", argv[0], "--lake", lake, *argv[1:]]) == code
        return [json.loads(line) for line in capsysbinary.readouterr().out.splitlines()]

    created = run("create", "--strategy", "entropy", "--size", "2", "--model", "net")[0]
    miner = created["miner_id"]
    assert run("status", miner)[0]["status"] == "PENDING"
    done = run("run", miner)[0]
    assert done["status"] == "SUCCESS" and done["result_size"] == 2
    assert main(["miners", "results", "--lake", lake, miner]) == 0
    ids = capsysbinary.readouterr().out.split()
    assert len(ids) == 2
    added = run("results", miner, "--add-to-dataset", "to label")[0]
    assert added["added"] == 2
    assert main(["datasets", "history", "--lake", lake, "to label"]) == 0
    capsysbinary.readouterr()
    listed = run("list")
    assert [(m["_id"], m["strategy"], m["status"]) for m in listed] == [(miner, "ENTROPY", "done")]
    assert run("show", miner)[0]["model_name"] == "net"
    assert run("reset", miner)[0]["status"] == "PENDING"

    failing = run("create", "--strategy", "CORESET", "--size", "2", "--model", "nope")[0]
    failed = run("run", failing["miner_id"], code=1)[0]
    assert failed["status"] == "FAILURE" and "model 'nope'" in failed["message"]
    assert main(["miners", "create", "--lake", lake, "--strategy", "CORESET", "--size", "2"]) == 1
    assert b"CORESET needs model_name" in capsysbinary.readouterr().err
    assert run("delete", miner)[0] == {"deleted": miner}
    assert main(["miners", "show", "--lake", lake, miner]) == 1
    assert b"not found" in capsysbinary.readouterr().err


def test_miner_commands_through_a_server(tmp_path, capsysbinary) -> None:  # type: ignore[no-untyped-def]
    from apitools import live_server  # type: ignore[import-not-found]

    from lake import Lake
    from lake.keys import ApiKeys

    lake = Lake(str(tmp_path / "lake"))
    _, key = ApiKeys(lake).create("acme")
    with live_server(lake) as url:
        remote = ["--endpoint", url, "--api-key", key]
        source = _miner_records(tmp_path / "m.ndjson")
        assert main(["upload", source, "--wait", "-q", *remote]) == 0
        capsysbinary.readouterr()

        def run(*argv: str, code: int = 0) -> list[dict]:  # type: ignore[type-arg]
            assert main(["miners", *argv, *remote]) == code
            return [json.loads(line) for line in capsysbinary.readouterr().out.splitlines()]

        filters = json.dumps([{"left": "metadata.uri", "op": "!=", "right": "s3://b/0.jpg"}])
        miner = run(
            "create",
            "--strategy",
            "CORESET",
            "--size",
            "2",
            "--model",
            "net:avgpool",
            "--filters",
            filters,
            "--seed",
            "3",
        )[0]["miner_id"]
        done = run("run", miner, "--wait")[0]
        assert done["status"] == "SUCCESS" and done["result_size"] == 2
        assert main(["miners", "results", miner, *remote]) == 0
        assert len(capsysbinary.readouterr().out.split()) == 2
        assert run("results", miner, "--add-to-dataset", "picked")[0]["added"] == 2
        assert [m["_id"] for m in run("list")] == [miner]
        assert run("show", miner)[0]["seed"] == 3
        assert run("status", miner)[0]["status"] == "SUCCESS"
        assert run("reset", miner)[0]["status"] == "PENDING"
        assert run("delete", miner)[0] == {"deleted": miner}
        assert main(["miners", "show", miner, *remote]) == 1
        assert b"404" in capsysbinary.readouterr().err
