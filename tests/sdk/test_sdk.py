"""The SDK against the server in-process (FastAPI's TestClient as its HTTP client)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest
from apitools import Api  # type: ignore[import-not-found]

import sdk

SAMPLE = Path(__file__).parents[1] / "data" / "sample.ndjson"
VAL = [
    {"left": "tags.name", "op": "=", "right": "split"},
    {"left": "tags.value", "op": "=", "right": "val"},
]


@pytest.fixture
def client(api: Api) -> sdk.Client:
    return sdk.Client(api_key=api.key, http=api.client)


def test_upload_a_file_and_records(client: sdk.Client) -> None:
    upload = sdk.upload_to_lake(SAMPLE, client=client, progress=False)
    assert upload.wait(timeout=60)["output"]["datapoints_created"] == 22
    assert upload.status() == "SUCCEEDED"
    records = [{"type": "TEXT", "text": f"t{i}", "tags": {"n": str(i)}} for i in range(5)]
    execution = sdk.wait_for_upload(
        sdk.upload_to_lake(records, client=client, progress=False), client=client
    )
    assert execution["output"]["datapoints_created"] == 5
    frame = sdk.select_datapoints(
        [{"left": "text", "op": "like", "right": "t_"}], columns=["id", "text"], client=client
    )
    assert isinstance(frame, pl.DataFrame) and sorted(frame["text"]) == [f"t{i}" for i in range(5)]


def test_wait_for_several_uploads(client: sdk.Client, tmp_path: Path) -> None:
    handles = [
        sdk.upload_to_lake(
            [{"type": "TEXT", "text": f"w{k}-{i}"} for i in range(k + 1)],
            client=client,
            progress=False,
        )
        for k in range(4)
    ]
    ids = [h.id for h in handles]
    executions = sdk.wait_for_uploads([handles[0], {"id": ids[1]}, ids[2], handles[3]])
    assert [e["id"] for e in executions] == ids
    assert [e["output"]["datapoints_created"] for e in executions] == [1, 2, 3, 4]
    assert handles[3].execution is not None and handles[3].execution["status"] == "SUCCEEDED"
    unknown = "01a2019a-be43-7000-8000-000000000000"
    with pytest.raises(sdk.NotFound):
        sdk.wait_for_uploads([handles[0], unknown], client=client)
    broken = tmp_path / "broken.ndjson"
    broken.write_bytes(b"\x1f\x8b" + b"not gzip at all" * 10)  # gzip's magic, then garbage
    failing = sdk.upload_to_lake(broken, client=client, progress=False)
    with pytest.raises(sdk.UploadFailed) as raised:
        sdk.wait_for_uploads([handles[0], failing], timeout=60)
    assert raised.value.upload_id == failing.id and raised.value.status == "FAILED"
    assert "compressed" in raised.value.message
    assert failing.execution is not None and failing.execution["status"] == "FAILED"


def test_selects_deletes_sql(client: sdk.Client) -> None:
    sdk.upload_to_lake(SAMPLE, client=client, wait=True, progress=False)
    val = sdk.select_datapoints(
        VAL, columns=["id", "metadata.uri"], order_by="metadata.uri", client=client
    )
    assert val.columns == ["id", "uri"] and val["uri"].to_list() == sorted(val["uri"].to_list())
    pandas = sdk.select_datapoints(VAL, limit=2, as_pandas=True, client=client)
    assert len(pandas) == 2 and "metadata" in pandas.columns
    top = sdk.select_predictions(
        [{"left": "confidence", "op": "is not", "right": None}],
        order_by="confidence",
        desc=True,
        limit=1,
        client=client,
    )
    assert (
        top["confidence"][0]
        == sdk.sql("SELECT max(confidence) AS m FROM predictions", client=client)["m"][0]
    )
    assert len(sdk.select_groundtruths(client=client)) == 21
    assert len(sdk.select_bboxes(client=client)) == 1
    deleted = sdk.delete_datapoints(VAL, client=client)
    assert sorted(d["id"] for d in deleted) == sorted(val["id"].to_list())
    assert len(sdk.select_datapoints(VAL, client=client)) == 0
    sdk.delete_predictions([], client=client)
    sdk.delete_groundtruths([], client=client)
    assert sdk.sql("SELECT count(*) AS n FROM predictions", client=client)["n"][0] == 0


def test_datasets(client: sdk.Client) -> None:
    sdk.upload_to_lake(SAMPLE, client=client, wait=True, progress=False)
    ids = sdk.select_datapoints(columns=["id"], client=client)["id"].to_list()
    dataset = sdk.Dataset.create("dogs", client=client)
    assert dataset.add(ids[:4]) == 4
    first = dataset.commit("four")
    assert dataset.remove(ids[:1]) == 1
    second = dataset.commit("three")
    assert dataset.diff(first, second)["removed"] == [ids[0]]
    assert [v["committed"] for v in dataset.history()] == [False, True, True]
    assert len(dataset.read_version(first, frozen=True)) == 4
    assert dataset.checkout(first) == first
    assert len(dataset.download_datapoints()) == 4
    assert sdk.Dataset.get_by_name("dogs", client=client).id == dataset.id
    assert sdk.Dataset.get_or_create("cats", client=client).name == "cats"
    assert {d.name for d in sdk.list_datasets(client=client)} == {"dogs", "cats"}
    dataset.delete()
    with pytest.raises(sdk.NotFound):
        sdk.Dataset.get(dataset.id, client=client)


def test_errors_are_typed(api: Api, client: sdk.Client) -> None:
    with pytest.raises(sdk.BadRequest, match="unknown column 'nope'"):
        sdk.select_datapoints([{"left": "nope", "op": "=", "right": 1}], client=client)
    with pytest.raises(sdk.Unauthorized):
        sdk.select_datapoints(client=sdk.Client(api_key="shoal_wrong", http=api.client))
    with pytest.raises(sdk.NotFound):
        sdk.wait_for_upload("01a2019a-be43-7000-8000-000000000000", client=client)
    bad = [{"type": "IMAGE", "metadata": {"x": 1}}, {"type": "NOPE"}]
    execution = sdk.upload_to_lake(bad, client=client, wait=False, progress=False).wait(60)
    assert execution["output"]["failures"] == 1 and "line 2" in execution["output"]["logs"][0]


def test_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(sdk.ConfigError, match="API key"):
        sdk.Client()
    monkeypatch.setenv("DIOPTRA_API_KEY", "k")
    with pytest.raises(sdk.ConfigError, match="endpoint"):
        sdk.Client()
    monkeypatch.setenv("DIOPTRA_APP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("SHOAL_API_KEY", "s")
    client = sdk.Client(retries=1, backoff=0.01)
    assert client.api_key == "s"
    with pytest.raises(sdk.ConnectionFailed):
        client.request("GET", "/api/dataset")


def test_transient_errors_are_retried() -> None:
    import httpx2

    calls: list[Any] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        calls.append(request)
        if len(calls) < 3:
            return httpx2.Response(503, json={"error": {"message": "storage is down"}})
        return httpx2.Response(200, json=[{"uuid": "u", "display_name": "d"}])

    http = httpx2.Client(base_url="http://shoal", transport=httpx2.MockTransport(handler))
    client = sdk.Client(api_key="k", http=http, backoff=0.01)
    assert [d.name for d in sdk.list_datasets(client=client)] == ["d"]
    assert len(calls) == 3 and calls[0].headers["x-api-key"] == "k"
    calls.clear()
    failing = sdk.Client(api_key="k", http=http, retries=1, backoff=0.01)
    with pytest.raises(sdk.ServerError, match="storage is down"):
        failing.request("GET", "/api/dataset")


def test_the_readme_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import re
    import shutil

    from apitools import live_server  # type: ignore[import-not-found]

    from lake import Lake
    from lake.keys import ApiKeys

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme[readme.index("### Python SDK") :]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    lake = Lake(str(tmp_path / "lake"))
    _, key = ApiKeys(lake).create("acme")
    shutil.copy(SAMPLE, tmp_path / "records.ndjson")
    monkeypatch.chdir(tmp_path)
    with live_server(lake) as url:
        monkeypatch.setenv("SHOAL_ENDPOINT", url)
        monkeypatch.setenv("SHOAL_API_KEY", key)
        scope: dict[str, Any] = {}
        exec(compile(code.group(1), "README.md", "exec"), scope)
        assert scope["execution"]["status"] == "SUCCEEDED"
        assert len(scope["frame"]) == 5 and len(scope["top"]) == 21
        assert len(scope["dataset"].read_version(scope["commit"], frozen=True)) == 5
        assert len(set(scope["picked"])) == 5
        labelled = sdk.Dataset.get_by_name("to label", client=scope["dataset"].client)
        assert sorted(labelled.download_datapoints()["id"]) == sorted(scope["picked"])
        scope["dataset"].client.close()


def test_exported_members_are_the_public_api() -> None:
    public = {name for name in dir(sdk) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(sdk, name)).__name__ == "module"}
    assert set(sdk.__all__) == public - modules
    for name in sdk.__all__:
        assert getattr(sdk, name).__module__.startswith("sdk"), name


def test_miners(client: sdk.Client) -> None:
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
                    "embeddings": {"avgpool": [float(i), 0.0]},
                }
            ],
        }
        for i in range(6)
    ]
    sdk.upload_to_lake(records, client=client, wait=True, progress=False)
    frame = sdk.select_datapoints([], columns=["id", "metadata.uri"], client=client)
    by_index = {
        int(u.split("/")[-1][:-4]): i for u, i in zip(frame["uri"], frame["id"], strict=True)
    }

    entropy = sdk.EntropyMiner("uncertain", 2, [], "net", client=client)
    assert entropy.status() == "PENDING" and entropy.results() == []
    assert entropy.run().wait(timeout=60, progress=False) == [by_index[0], by_index[1]]
    assert entropy.get_config()["strategy"] == "ENTROPY"
    assert entropy.add_results_to("to label") == 2
    assert sorted(
        sdk.Dataset.get_by_name("to label", client=client).download_datapoints()["id"]
    ) == sorted([by_index[0], by_index[1]])

    coreset = sdk.CoresetMiner(
        "spread",
        2,
        [],
        "net:avgpool",
        select_reference_filters=[{"left": "id", "op": "=", "right": by_index[0]}],
        client=client,
    )
    picked = coreset.run().wait(timeout=60, progress=False)
    assert picked[0] == by_index[5] and picked[1] in (by_index[2], by_index[3])  # x=5, then 2|3

    missing = sdk.ActivationMiner("quiet", 2, [], "other:layer", client=client)
    with pytest.raises(
        sdk.MinerFailed, match="no EMBEDDINGS feature vectors of model 'other:layer'"
    ):
        missing.run().wait(timeout=60, progress=False)
    with pytest.raises(sdk.BadRequest, match="strategy must be one of"):
        sdk.Miner.create({"display_name": "x", "strategy": "MAGIC", "size": 1}, client=client)

    listed = {m.id: m.name for m in sdk.list_miners(client=client)}
    assert listed == {entropy.id: "uncertain", coreset.id: "spread", missing.id: "quiet"}
    assert sdk.Miner.get(coreset.id, client=client).config["metric"] == "euclidean"
    entropy.reset()
    assert entropy.status() == "PENDING"
    for miner in (entropy, coreset, missing):
        miner.delete()
    assert sdk.list_miners(client=client) == []
    with pytest.raises(sdk.NotFound):
        entropy.status()


def test_files_are_sent_as_zstd_unless_compressed_and_resent_whole(tmp_path: Path) -> None:
    import gzip
    import io

    import zstandard
    from tqdm import tqdm

    from sdk._uploads import _Chunks

    text = SAMPLE.read_bytes() * 50
    for name, data, compressed in [
        ("plain.ndjson", text, False),
        ("packed.ndjson.gz", gzip.compress(text), True),
    ]:
        path = tmp_path / name
        path.write_bytes(data)
        with open(path, "rb") as handle, tqdm(total=len(data), file=io.StringIO()) as bar:
            chunks = _Chunks(handle, bar)
            sent = [b"".join(chunks), b"".join(chunks)]  # a retry sends the same body
            assert bar.n == len(data)
            assert sent[0] == sent[1]
            if compressed:
                assert sent[0] == data and chunks.headers(len(data)) == {
                    "content-length": str(len(data))
                }
            else:
                assert sent[0].startswith(b"\x28\xb5\x2f\xfd") and len(sent[0]) < len(data) / 5
                reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(sent[0]))
                assert reader.read() == data
                assert chunks.headers(len(data)) == {}  # chunked: the length shows as it comes
