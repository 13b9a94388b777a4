"""The server in-process: auth, uploads, selects, deletes, SQL, datasets, errors and tenancy."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from apitools import Api  # type: ignore[import-not-found]

from lake.keys import ApiKeys

SAMPLE = Path(__file__).parents[1] / "data" / "sample.ndjson"
VAL = [
    {"left": "tags.name", "op": "=", "right": "split"},
    {"left": "tags.value", "op": "=", "right": "val"},
]


def upload_sample(api: Api, *, key: str | None = None) -> dict[str, Any]:
    data = SAMPLE.read_bytes().replace(b"\n", b"\r")  # the reference client joins with \r
    response = api.client.post(
        "/api/ingestion/upload",
        files={"file": ("records.ndjson", data)},
        headers=api.headers(key),
    )
    assert response.status_code == 200, response.text
    started = api.post("/api/ingestion/ingest", {"urls": [response.json()["url"]]}, key=key)
    assert started["status"] == "RUNNING" and started["id"]
    return api.wait(started["id"], key=key)


def test_every_route_needs_a_valid_key(api: Api) -> None:
    for method, path in [
        ("post", "/api/datapoints/select"),
        ("post", "/api/sql"),
        ("get", "/api/dataset"),
        ("get", "/api/ingestion/executions"),
        ("post", "/api/ingestion/ingest"),
    ]:
        for headers in ({}, {"x-api-key": "shoal_nope"}):
            response = getattr(api.client, method)(path, headers=headers)
            assert response.status_code == 401, (path, response.text)
            assert response.json() == {
                "error": {"message": "Unauthorized: a valid x-api-key is required"}
            }
    health = api.client.get("/health").json()  # the only open route
    assert health["status"] == "ok"
    assert health["group_commit"] == {"process": False, "alive": True, "restarts": 0, "waiting": 0}


def test_revoked_keys_stop_working(api: Api) -> None:
    keys = ApiKeys(api.lake)
    record, key = keys.create("acme", name="temporary")
    assert api.client.get("/api/dataset", headers={"x-api-key": key}).status_code == 200
    keys.revoke(record.id)
    services = api.client.app.state.services  # type: ignore[attr-defined]
    services.keys._cached_at = float("-inf")  # skip the cache delay
    assert api.client.get("/api/dataset", headers={"x-api-key": key}).status_code == 401


def test_upload_file_then_ingest(api: Api) -> None:
    execution = upload_sample(api)
    assert execution["status"] == "SUCCEEDED"
    assert execution["output"]["datapoints_created"] == 22 and execution["output"]["logs"] == []
    assert execution["startDate"].endswith("Z") and execution["durationMs"] >= 0
    listed = api.get("/api/ingestion/executions")
    assert [e["id"] for e in listed] == [execution["id"]]


def test_bad_records_are_listed_and_the_rest_lands(api: Api) -> None:
    execution = api.ingest([{"type": "IMAGE"}, {"type": "NOPE"}, {"id": "not-a-uuid"}])
    assert execution["status"] == "SUCCEEDED"
    assert execution["output"]["datapoints_created"] == 1
    assert [log.split(",")[0] for log in execution["output"]["logs"]] == ["line 2", "line 3"]


def test_selects_deletes_and_sql(api: Api) -> None:
    upload_sample(api)
    rows = api.post(
        "/api/datapoints/select",
        {"selectColumns": ["id", "metadata.uri", "tags.*"], "filters": VAL, "limit": 3},
    )
    assert len(rows) == 3 and set(rows[0]) == {"id", "uri", "tags"}
    assert rows[0]["uri"].startswith("s3://") and rows[0]["tags"][0]["organization_id"] == "acme"
    everything = api.post("/api/datapoints/select", {"selectColumns": ["*"]})
    assert len(everything) == 22 and isinstance(everything[0]["metadata"], dict)
    predictions = api.post(
        "/api/predictions/select",
        {
            "selectColumns": ["*", "feature_vectors.*"],
            "filters": [{"left": "confidence", "op": "is not", "right": None}],
            "orderBy": "confidence",
            "desc": True,
            "limit": 1,
        },
    )
    assert predictions[0]["feature_vectors"] and isinstance(predictions[0]["metrics"], dict)
    assert len(api.post("/api/groundtruths/select", {})) == 21
    assert len(api.post("/api/bboxes/select", {})) == 1  # the sample's one detection box
    with_tags = api.post("/api/datapoints/select", {"selectColumns": ["id", "tags.*"]})
    tags = sum(len(r["tags"]) for r in with_tags)
    counted = api.post("/api/sql", {"query": "SELECT count(*) AS n FROM tags"})
    assert counted == [{"n": tags}] and tags > 22
    deleted = api.post(
        "/api/datapoints/delete",
        {"filters": VAL, "orderBy": None, "desc": None, "limit": None, "offset": 0},
    )
    assert len(deleted) == 5 and isinstance(deleted[0]["metadata"], dict)
    assert len(api.post("/api/datapoints/select", {"selectColumns": ["id"]})) == 17
    gone = sum(len(r["tags"]) for r in with_tags if r["id"] in {d["id"] for d in deleted})
    assert api.post("/api/sql", {"query": "SELECT count(*) AS n FROM tags"}) == [{"n": tags - gone}]


def test_errors_are_json_with_precise_messages(api: Api) -> None:
    def error(method: str, path: str, body: Any = None) -> tuple[int, str]:
        response = getattr(api.client, method)(
            path, headers=api.headers(), **({"json": body} if body is not None else {})
        )
        return response.status_code, response.json()["error"]["message"]

    status, message = error(
        "post", "/api/datapoints/select", {"filters": [{"left": "nope", "op": "=", "right": 1}]}
    )
    assert status == 400 and "unknown column 'nope'" in message
    status, message = error("post", "/api/datapoints/select", {"filters": "x"})
    assert status == 400 and message.startswith("invalid request: filters")
    status, message = error("post", "/api/sql", {"query": "DROP TABLE datapoints"})
    assert status == 400 and "only SELECT" in message
    status, message = error("get", "/api/ingestion/executions/01a2019a-be43-7000-8000-000000000000")
    assert status == 404 and "not found" in message
    status, message = error("post", "/api/ingestion/ingest", {"url": "http://169.254.169.254/x"})
    assert status == 400 and "169.254.169.254:80 is not allowed" in message
    status, message = error("post", "/api/ingestion/ingest", {})
    assert status == 400 and "nothing to ingest" in message
    status, message = error("post", "/api/tags/select", {})
    assert status in (400, 404)
    response = api.client.post(
        "/api/ingestion/ingest",
        content=b"{}",
        headers={**api.headers(), "content-type": "application/json", "content-length": str(2**40)},
    )
    assert response.status_code == 413 and "over the limit" in response.json()["error"]["message"]


def test_datasets_over_http(api: Api) -> None:
    upload_sample(api)
    ids = [r["id"] for r in api.post("/api/datapoints/select", {"selectColumns": ["id"]})]
    dataset = api.post("/api/dataset", {"displayName": "dogs"})
    assert set(dataset) == {"uuid", "organization_id", "created_at", "created_by", "display_name"}
    uuid = dataset["uuid"]
    assert api.get(f"/api/dataset/{uuid}")["display_name"] == "dogs"
    assert api.get("/api/dataset/01a2019a-be43-7000-8000-000000000000") == {}
    assert [d["uuid"] for d in api.get("/api/dataset")] == [uuid]
    api.post(f"/api/dataset/{uuid}/add", {"datapointIds": ids[:5]})
    first = api.post(f"/api/dataset/{uuid}/commit", {"message": "five"})
    assert first["committed"] and first["message"] == "five" and first["dataset_uuid"] == uuid
    api.post(f"/api/dataset/{uuid}/remove", {"datapointIds": ids[:2]})
    assert len(api.get(f"/api/dataset/{uuid}/datapoints")) == 3
    history = api.get(f"/api/dataset/{uuid}/versions")
    assert [v["committed"] for v in history] == [False, True]
    assert api.post(f"/api/dataset/{uuid}/checkout/{first['uuid']}") == first["uuid"]
    assert len(api.get(f"/api/dataset/{uuid}/datapoints")) == 5
    second = api.post(f"/api/dataset/{uuid}/commit", {"message": "again"})
    diff = api.get(f"/api/dataset/diff/{first['uuid']}/{second['uuid']}")
    assert diff["added"] == [] and diff["removed"] == [] and diff["dataset1"] == uuid
    frozen = api.get(f"/api/dataset/version/{first['uuid']}/datapoints?frozen=true")
    assert sorted(r["id"] for r in frozen) == sorted(ids[:5])
    response = api.client.post(
        f"/api/dataset/{uuid}/add", json={"datapointIds": ["nope"]}, headers=api.headers()
    )
    assert response.status_code == 400 and "UUIDs" in response.json()["error"]["message"]
    api.client.delete(f"/api/dataset/{uuid}", headers=api.headers())
    assert api.get("/api/dataset") == []


def test_a_second_organization_sees_and_changes_nothing(api: Api) -> None:
    execution = upload_sample(api)
    other = api.other_key
    assert api.post("/api/datapoints/select", {}, key=other) == []
    assert api.post("/api/sql", {"query": "SELECT count(*) AS n FROM datapoints"}, key=other) == [
        {"n": 0}
    ]
    assert api.post("/api/datapoints/delete", {"filters": []}, key=other) == []
    assert api.get("/api/ingestion/executions", key=other) == []
    response = api.client.get(
        f"/api/ingestion/executions/{execution['id']}", headers=api.headers(other)
    )
    assert response.status_code == 404
    mine = api.post("/api/dataset", {"displayName": "mine"})
    assert api.get("/api/dataset", key=other) == []
    assert api.get(f"/api/dataset/{mine['uuid']}", key=other) == {}
    ids = [r["id"] for r in api.post("/api/datapoints/select", {"selectColumns": ["id"]})]
    theirs = api.post("/api/dataset", {"displayName": "theirs"}, key=other)
    response = api.client.post(
        f"/api/dataset/{theirs['uuid']}/add", json={"datapointIds": ids}, headers=api.headers(other)
    )
    assert response.status_code == 404  # acme's datapoints do not exist for other
    # landed files are per organization too
    token = api.client.post(
        "/api/ingestion/upload",
        files={"file": ("r.ndjson", b'{"type":"TEXT","text":"x"}')},
        headers=api.headers(),
    ).json()["url"]
    response = api.client.post(
        "/api/ingestion/ingest", json={"url": token}, headers=api.headers(other)
    )
    assert (
        response.status_code == 400
        and "nothing was uploaded" in response.json()["error"]["message"]
    )
    assert len(api.post("/api/datapoints/select", {"selectColumns": ["id"]})) == 22


def test_url_with_offset_and_limit_ingests_those_lines(api: Api) -> None:
    lines = b"\n".join(b'{"type": "TEXT", "text": "line %d"}' % n for n in range(1, 9))
    landed = api.client.post(
        "/api/ingestion/upload", files={"file": ("r.ndjson", lines)}, headers=api.headers()
    ).json()["url"]
    started = api.post("/api/ingestion/ingest", {"url": landed, "offset": 2, "limit": 5})
    execution = api.wait(started["id"])
    assert execution["status"] == "SUCCEEDED" and execution["output"]["records_read"] == 3
    texts = sorted(
        r["text"] for r in api.post("/api/datapoints/select", {"selectColumns": ["text"]})
    )
    assert texts == ["line 3", "line 4", "line 5"]  # the reference's islice(lines, 2, 5)


def test_urls_outside_the_lake_are_refused_and_change_nothing(api: Api) -> None:
    assert api.ingest([{"type": "IMAGE"}])["status"] == "SUCCEEDED"
    before = api.lake.state()
    for url in [
        "http://169.254.169.254/latest/meta-data/",  # link-local (cloud metadata)
        "http://127.0.0.1:9/records.ndjson",  # loopback, not the lake's store
        "http://localhost/records.ndjson",
        "file:///etc/passwd",
        "https://example.com/redirect?to=http://127.0.0.1/",  # would redirect
        "s3://another-bucket/records.ndjson",
    ]:
        for body in ({"url": url}, {"urls": [url]}):
            response = api.client.post("/api/ingestion/ingest", json=body, headers=api.headers())
            assert response.status_code == 400, (url, response.text)
            message = response.json()["error"]["message"]
            assert message.startswith(f"cannot ingest {url.split('?')[0]!r}: "), message
            assert "is not allowed" in message or "only http and https" in message, message
    for url in ("upload://../../../etc/passwd", "upload://x/../../y", "upload://"):
        response = api.client.post(
            "/api/ingestion/ingest", json={"url": url}, headers=api.headers()
        )
        assert response.status_code == 400, (url, response.text)
        assert "is not a url answered by /api/ingestion/upload" in response.text
    unknown = api.client.post(
        "/api/ingestion/ingest",
        json={"url": "upload://AAAAAAAAAAAAAAAAAAAAAA"},
        headers=api.headers(),
    )
    assert unknown.status_code == 400 and "nothing was uploaded" in unknown.text
    assert api.lake.state() == before  # no upload was even recorded


def test_upload_file_names_never_become_paths(api: Api, tmp_path: Path) -> None:
    for name in ("../../../escaped.ndjson", "/etc/passwd", "..\\..\\win.ndjson", "a/../../b"):
        response = api.client.post(
            "/api/ingestion/upload",
            files={"file": (name, b'{"type": "IMAGE"}\n')},
            headers=api.headers(),
        )
        assert response.status_code == 200, response.text
        url = response.json()["url"]
        assert url.startswith("upload://") and ".." not in url and "/" not in url[9:]
        execution = api.post("/api/ingestion/ingest", {"url": url})
        assert api.wait(execution["id"])["status"] == "SUCCEEDED"
    assert not (tmp_path.parent / "escaped.ndjson").exists()
    assert not any(p.name.endswith(("escaped.ndjson", "win.ndjson")) for p in tmp_path.rglob("*"))


def test_a_status_request_can_wait_for_the_upload_to_end(api: Api) -> None:
    records = [{"type": "IMAGE", "metadata": {"uri": f"s3://b/w/{i}.jpg"}} for i in range(50)]
    landed = api.client.post(
        "/api/ingestion/upload",
        files={"file": ("r.ndjson", "\n".join(json.dumps(r) for r in records).encode())},
        headers=api.headers(),
    ).json()["url"]
    for body in (
        {"records": records},  # group-committed
        {"url": landed, "offset": 0, "limit": 50},  # an ordinary job
    ):
        upload_id = api.post("/api/ingestion/ingest", body)["id"]
        began = time.monotonic()
        # one request: answered when the upload ends, long before the 30 s it may wait
        execution = api.get(f"/api/ingestion/executions/{upload_id}?wait=30")
        assert execution["status"] == "SUCCEEDED", execution
        assert time.monotonic() - began < 25
    status, message = error_of(api, f"/api/ingestion/executions/{upload_id}?wait=61")
    assert status == 400 and "wait" in message
    status, message = error_of(
        api, "/api/ingestion/executions/01a2019a-be43-7000-8000-000000000000?wait=5"
    )
    assert status == 404 and "not found" in message
    # another organization waits for nothing: the upload is not theirs
    status, _ = error_of(api, f"/api/ingestion/executions/{upload_id}?wait=5", key=api.other_key)
    assert status == 404


def test_one_request_waits_for_several_uploads(api: Api) -> None:
    batches = [
        [{"type": "IMAGE", "metadata": {"uri": f"s3://b/m/{k}/{i}.jpg"}} for i in range(20)]
        for k in range(3)
    ]
    bad = [{"type": "IMAGE"}, {"type": "NOPE"}]
    ids = [api.post("/api/ingestion/ingest", {"records": b})["id"] for b in [*batches, bad]]
    ended: dict[str, dict[str, Any]] = {}
    for _ in range(20):  # each answer comes once one of those asked about has ended
        running = [i for i in ids if i not in ended]
        if not running:
            break
        answer = api.get(f"/api/ingestion/executions?ids={','.join(running)}&wait=30")
        assert [e["id"] for e in answer] == running  # in the order asked
        assert any(e["status"] != "RUNNING" for e in answer)
        ended.update({e["id"]: e for e in answer if e["status"] != "RUNNING"})
    assert [ended[i]["status"] for i in ids] == ["SUCCEEDED"] * 4
    assert [ended[i]["output"]["datapoints_created"] for i in ids] == [20, 20, 20, 1]
    assert ended[ids[3]]["output"]["failures"] == 1
    # ended ones are answered at once, as /executions/{id} gives them, duplicates once
    again = api.get(f"/api/ingestion/executions?ids={ids[0]},{ids[0]},{ids[1]}&wait=30")
    assert again == [api.get(f"/api/ingestion/executions/{i}") for i in ids[:2]]
    # without ids: the most recent uploads, as before
    assert {u["id"] for u in api.get("/api/ingestion/executions")} >= set(ids)

    unknown = "01a2019a-be43-7000-8000-000000000000"
    status, message = error_of(api, f"/api/ingestion/executions?ids={ids[0]},{unknown}")
    assert status == 404 and unknown in message
    status, message = error_of(api, f"/api/ingestion/executions?ids={ids[0]}", key=api.other_key)
    assert status == 404  # another organization's upload is not there for them
    status, message = error_of(api, "/api/ingestion/executions?ids=,")
    assert status == 400 and "at least one" in message
    many = ",".join(f"01a2019a-be43-7000-8000-{n:012d}" for n in range(1001))
    status, message = error_of(api, f"/api/ingestion/executions?ids={many}")
    assert status == 400 and "at most 1000" in message
    status, message = error_of(api, f"/api/ingestion/executions?ids={ids[0]}&wait=61")
    assert status == 400 and "wait" in message


def error_of(api: Api, path: str, *, key: str | None = None) -> tuple[int, str]:
    response = api.client.get(path, headers=api.headers(key))
    return response.status_code, response.json()["error"]["message"]
