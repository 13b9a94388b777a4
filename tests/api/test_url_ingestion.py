"""Ingesting by URL: fetched only from the lake's object store or allow-listed hosts.

A real HTTP server on loopback plays the allow-listed host (with a redirecting, a missing, an
oversized and a broken file); the SeaweedFS of the session plays the lake's own store, which
presigned URLs of the published ``dioptra`` client point at.
"""

from __future__ import annotations

import gzip
import http.server
import importlib
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from apitools import Api, live_server, make_api  # type: ignore[import-not-found]
from conftest import s3_lake_uri, s3_options  # type: ignore[import-not-found]
from pydantic import ValidationError
from s3server import S3Server  # type: ignore[import-not-found]

from api.fetch import UrlFetcher, parse_hosts, shown, store_hosts
from api.settings import Settings
from lake import JobRunner, Lake, Uploads
from lake.errors import InputError
from lake.keys import ApiKeys
from lake.storage import LakeLocation, S3Options

RECORDS = [{"type": "IMAGE", "metadata": {"uri": f"s3://b/url/{i}.jpg"}} for i in range(6)]
BODY = "\n".join(json.dumps(r) for r in RECORDS).encode()


class Files(http.server.ThreadingHTTPServer):
    """path → (status, headers, body); ``hits`` counts the requests that arrived."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.hits: list[str] = []

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Files

    def do_GET(self) -> None:
        self.server.hits.append(self.path)
        route = self.server.routes.get(self.path.split("?")[0], (404, {}, b"not here"))
        status, headers, body = route
        self.send_response(status)
        headers = {"Content-Length": str(len(body)), **headers}
        for name, value in headers.items():
            if value:  # an empty value leaves the header out
                self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)
        if headers.get("Connection") == "close":
            self.close_connection = True

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def files() -> Iterator[Files]:
    server = Files()
    server.routes["/records.ndjson"] = (200, {}, BODY)
    server.routes["/records.ndjson.gz"] = (200, {}, gzip.compress(BODY))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def url_api(lake: Lake, files: Files) -> Iterator[Api]:
    yield from make_api(lake, url_hosts=f"{files.host}, 169.254.169.254", max_url_mb=0.01)


def uris(api: Api, key: str | None = None) -> list[str]:
    rows = api.post("/api/datapoints/select", {"selectColumns": ["metadata.uri"]}, key=key)
    return sorted(r.get("uri") or r["metadata"]["uri"] for r in rows)


def landed(lake: Lake) -> list[str]:
    return lake.store.list("_landing/")


def test_an_allow_listed_url_is_fetched_and_ingested(url_api: Api, files: Files) -> None:
    started = url_api.post("/api/ingestion/ingest", {"urls": [files.base + "/records.ndjson"]})
    execution = url_api.wait(started["id"])
    assert execution["status"] == "SUCCEEDED", execution
    assert execution["output"]["datapoints_created"] == 6
    assert uris(url_api) == sorted(r["metadata"]["uri"] for r in RECORDS)
    assert uris(url_api, key=url_api.other_key) == []  # landed for the caller's organization
    # gzip detected by its bytes; the reference's offset/limit over the fetched file; the
    # signature-bearing query string never shows in the upload's source
    gz = url_api.post(
        "/events",
        {"url": files.base + "/records.ndjson.gz?X-Amz-Signature=secret", "offset": 1, "limit": 3},
        key=url_api.other_key,
    )
    done = url_api.wait(gz["id"], key=url_api.other_key)
    assert done["status"] == "SUCCEEDED", done["errorMessage"]
    assert done["output"]["datapoints_created"] == 2
    listed = url_api.get("/api/ingestion/executions", key=url_api.other_key)
    assert listed[0]["source"] == files.base + "/records.ndjson.gz"
    assert files.hits == ["/records.ndjson", "/records.ndjson.gz?X-Amz-Signature=secret"]


def test_urls_that_may_not_be_fetched_are_refused_before_anything_happens(
    url_api: Api, files: Files
) -> None:
    url_api.ingest([{"type": "IMAGE"}])
    before = url_api.lake.state()
    port = files.server_address[1]
    refused = {
        f"http://127.0.0.1:{port + 1 if port < 65535 else 1}/x": "is not allowed",  # other port
        f"http://localhost:{port}/records.ndjson": "host localhost:",  # other name, same place
        "http://169.254.169.254/latest/meta-data/": "link-local",  # even when allow-listed
        "http://example.com/records.ndjson": "host example.com:80 is not allowed",
        "file:///etc/passwd": "only http and https URLs",
        "s3://another-bucket/records.ndjson": "only http and https URLs",
        "ftp://127.0.0.1/records.ndjson": "only http and https URLs",
        f"http://user:pw@127.0.0.1:{port}/records.ndjson": "user name or password",
        "records.ndjson": "only http and https URLs",
        "http://[::1/x": "not a valid URL",
    }
    for url, reason in refused.items():
        for body in ({"url": url}, {"urls": [url]}):
            response = url_api.client.post(
                "/api/ingestion/ingest", json=body, headers=url_api.headers()
            )
            assert response.status_code == 400, (url, response.text)
            assert reason in response.json()["error"]["message"], (url, response.text)
            assert "pw@" not in response.text
    assert files.hits == []  # nothing was even asked of the allowed host
    assert url_api.lake.state() == before  # no upload recorded


@pytest.mark.parametrize(
    ("route", "reason"),
    [
        ((302, {"Location": "http://169.254.169.254/"}, b""), "redirects are not followed"),
        ((404, {}, b"gone"), "HTTP 404"),
        ((200, {}, b"x" * 20_000), "bytes allowed (SHOAL_MAX_URL_MB)"),  # announced length
        ((200, {"Content-Length": "", "Connection": "close"}, b"x" * 20_000), "bytes allowed"),
        # the body stops short of its announced length
        ((200, {"Content-Length": "5000", "Connection": "close"}, BODY), "failed after"),
    ],
    ids=["redirect", "missing", "too-big", "too-big-unannounced", "cut-short"],
)
def test_a_fetch_that_fails_fails_the_upload_with_the_reason(
    url_api: Api, files: Files, route: tuple[int, dict[str, str], bytes], reason: str
) -> None:
    files.routes["/file"] = route
    url_api.ingest([{"type": "IMAGE", "metadata": {"uri": "s3://b/kept.jpg"}}])
    before = landed(url_api.lake)
    started = url_api.post("/api/ingestion/ingest", {"url": files.base + "/file?sig=s"})
    execution = url_api.wait(started["id"])
    assert execution["status"] == "FAILED", execution
    assert reason in execution["errorMessage"], execution
    assert "sig=s" not in json.dumps(execution)  # the query (a signature) is never shown
    assert uris(url_api) == ["s3://b/kept.jpg"]  # what was stored stays, nothing was added
    assert landed(url_api.lake) == before  # no partial copy left behind
    assert files.hits == ["/file?sig=s"]  # redirects not followed


def test_presigned_urls_of_the_lakes_own_store_need_no_allow_list(
    s3_server: S3Server, files: Files
) -> None:
    s3 = s3_server.client()
    s3.put_object(Bucket=s3_server.bucket, Key="incoming/records.ndjson", Body=BODY)
    presigned = s3.generate_presigned_url(
        "get_object", Params={"Bucket": s3_server.bucket, "Key": "incoming/records.ndjson"}
    )
    s3_lake = Lake(s3_lake_uri(s3_server), s3=s3_options(s3_server))
    for api in make_api(s3_lake):
        execution = api.wait(api.post("/api/ingestion/ingest", {"urls": [presigned]})["id"])
        assert execution["status"] == "SUCCEEDED", execution
        assert len(uris(api)) == 6
        # the store's host on another port is not the store
        other = files.base + "/records.ndjson"
        response = api.client.post(
            "/api/ingestion/ingest", json={"url": other}, headers=api.headers()
        )
        assert response.status_code == 400 and "is not allowed" in response.text
    assert store_hosts(LakeLocation.parse("/data/lake")) == []


def test_the_published_client_ingests_from_a_bucket(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3_server.client().put_object(
        Bucket=s3_server.bucket, Key="incoming/client.ndjson", Body=gzip.compress(BODY)
    )
    lake = Lake(s3_lake_uri(s3_server), s3=s3_options(s3_server))
    _, key = ApiKeys(lake).create("acme")
    with live_server(lake) as url:
        monkeypatch.setenv("DIOPTRA_API_KEY", key)
        monkeypatch.setenv("DIOPTRA_API_ENDPOINT", url + "/events")
        monkeypatch.setenv("DIOPTRA_APP_ENDPOINT", url)
        monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)  # where boto3 presigns for
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
        monkeypatch.setenv("AWS_REGION", "us-east-1")
        utils = importlib.import_module("dioptra.lake.utils")
        started = utils.upload_to_lake_from_bucket(s3_server.bucket, "incoming/client.ndjson")
        assert started["status"] == "RUNNING"
        done = utils.wait_for_upload(started)
        assert done["status"] == "SUCCEEDED" and done["output"]["datapoints_created"] == 6
        batched = utils.upload_to_lake_from_bucket(
            s3_server.bucket, "incoming/client.ndjson", disable_batching=True, offset=4, limit=6
        )
        assert utils.wait_for_upload(batched)["output"]["datapoints_created"] == 2


def test_a_fetch_interrupted_by_a_restart_is_fetched_again(local_lake: Lake, files: Files) -> None:
    fetcher = UrlFetcher(parse_hosts(files.host), max_bytes=2**20)
    upload = Uploads(local_lake, fetcher=fetcher).fetch(files.base + "/records.ndjson")
    assert landed(local_lake) == []  # the server stopped before the job fetched anything
    runner = JobRunner(local_lake, uploads=Uploads(local_lake, fetcher=fetcher))
    assert upload.id in runner.start()
    try:
        done = runner.wait(upload.id, timeout=60)
    finally:
        runner.shutdown()
    assert str(done.status) == "SUCCEEDED" and done.counts.datapoints_created == 6
    # a lake without a fetcher (the CLI's) says why it cannot go on, instead of hanging
    again = Uploads(local_lake, fetcher=fetcher).fetch(files.base + "/records.ndjson")
    failed = Uploads(local_lake).run(again.id)
    assert str(failed.status) == "FAILED" and "does not fetch URLs" in (failed.error_message or "")


def test_host_entries_store_hosts_and_shown_urls() -> None:
    hosts = parse_hosts("data.example.com, *.cdn.example.com:8443, 10.0.0.5:9000, [::1]:80")
    # names resolved offline to a private address: only the matching rules are under test
    offline = lambda *a, **k: [(0, 0, 0, "", ("10.0.0.5", 0))]  # noqa: E731
    fetcher = UrlFetcher(hosts, max_bytes=1, resolve=offline)
    fetcher.check("https://data.example.com/x")  # any port of a name given without one
    fetcher.check("http://data.example.com:8080/x")
    fetcher.check("https://a.cdn.example.com:8443/x")
    fetcher.check("http://10.0.0.5:9000/x")
    for url in (
        "https://cdn.example.com:8443/x",
        "https://a.cdn.example.com/x",
        "http://10.0.0.5/x",
    ):
        with pytest.raises(InputError, match="is not allowed"):
            fetcher.check(url)
    with pytest.raises(ValueError, match="not host, host:port"):
        parse_hosts("http://x.com/path")
    with pytest.raises(ValidationError, match="URL host entry"):
        Settings(url_hosts="a.com:notaport")
    aws = store_hosts(LakeLocation.parse("s3://b/p", s3=S3Options(region="eu-west-1")))
    assert any(h.matches("b.s3.eu-west-1.amazonaws.com", 443) for h in aws)
    assert not any(h.matches("evil.com", 443) for h in aws)
    minio = store_hosts(
        LakeLocation.parse("s3://b", s3=S3Options(endpoint_url="http://minio:9000"))
    )
    assert [(h.pattern, h.port) for h in minio] == [("minio", 9000)]
    assert shown("https://u:p@h.com/a/b.ndjson?X-Amz-Signature=s") == "https://h.com/a/b.ndjson"
