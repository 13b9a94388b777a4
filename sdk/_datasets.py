"""Datasets: the reference client's ``Dataset`` methods, plus diff and frozen reads."""

from __future__ import annotations

from typing import Any

from sdk._client import Client, default_client
from sdk._errors import NotFound
from sdk._query import Frame, _frame


class Dataset:
    """A dataset on the server. Build it with :meth:`create`, :meth:`get` or :meth:`get_by_name`."""

    def __init__(self, row: dict[str, Any], client: Client) -> None:
        self.id: str = row["uuid"]
        self.name: str = row["display_name"]
        self.row = row
        self.client = client

    def __repr__(self) -> str:
        return f"Dataset({self.name!r}, id={self.id!r})"

    # -- finding ----------------------------------------------------------------------------
    @classmethod
    def create(cls, name: str, *, client: Client | None = None) -> Dataset:
        client = client or default_client()
        return cls(client.request("POST", "/api/dataset", json={"displayName": name}), client)

    @classmethod
    def get(cls, dataset_id: str, *, client: Client | None = None) -> Dataset:
        client = client or default_client()
        row = client.request("GET", f"/api/dataset/{dataset_id}")
        if not row:
            raise NotFound(404, f"dataset {dataset_id} not found")
        return cls(row, client)

    @classmethod
    def get_by_name(cls, name: str, *, client: Client | None = None) -> Dataset:
        client = client or default_client()
        for dataset in list_datasets(client=client):
            if dataset.name == name:
                return dataset
        raise NotFound(404, f"no dataset is named {name!r}")

    @classmethod
    def get_or_create(cls, name: str, *, client: Client | None = None) -> Dataset:
        try:
            return cls.get_by_name(name, client=client)
        except NotFound:
            return cls.create(name, client=client)

    # -- changing ---------------------------------------------------------------------------
    def add(self, datapoint_ids: list[str]) -> int:
        """Add to the working version; return how many were new."""
        body = {"datapointIds": list(datapoint_ids)}
        return int(self.client.request("POST", f"/api/dataset/{self.id}/add", json=body)["added"])

    def remove(self, datapoint_ids: list[str]) -> int:
        body = {"datapointIds": list(datapoint_ids)}
        answer = self.client.request("POST", f"/api/dataset/{self.id}/remove", json=body)
        return int(answer["removed"])

    def commit(self, message: str | None = None) -> str:
        """Commit the working version; return the commit (version) id."""
        body = {"message": message}
        return str(self.client.request("POST", f"/api/dataset/{self.id}/commit", json=body)["uuid"])

    def checkout(self, version_id: str) -> str:
        """Discard uncommitted changes; continue from the committed ``version_id``."""
        return str(self.client.request("POST", f"/api/dataset/{self.id}/checkout/{version_id}"))

    def delete(self) -> None:
        self.client.request("DELETE", f"/api/dataset/{self.id}")

    # -- reading ----------------------------------------------------------------------------
    def history(self) -> list[dict[str, Any]]:
        """Versions, newest first; the working (uncommitted) version comes first."""
        versions: list[dict[str, Any]] = self.client.request(
            "GET", f"/api/dataset/{self.id}/versions"
        )
        return versions

    def download_datapoints(self, *, as_pandas: bool = False) -> Frame:
        """The datapoints of the working version."""
        return _frame(self.client.request("GET", f"/api/dataset/{self.id}/datapoints"), as_pandas)

    def read_version(
        self, version_id: str, *, frozen: bool = False, as_pandas: bool = False
    ) -> Frame:
        """The datapoints of any version: live, or as they were at its commit (``frozen``)."""
        rows = self.client.request(
            "GET",
            f"/api/dataset/version/{version_id}/datapoints",
            params={"frozen": "true" if frozen else "false"},
        )
        return _frame(rows, as_pandas)

    def diff(self, version1: str, version2: str) -> dict[str, Any]:
        """Datapoint ids ``{"added": [...], "removed": [...]}`` from version1 to version2."""
        answer: dict[str, Any] = self.client.request(
            "GET", f"/api/dataset/diff/{version1}/{version2}"
        )
        return answer


def list_datasets(*, client: Client | None = None) -> list[Dataset]:
    client = client or default_client()
    return [Dataset(row, client) for row in client.request("GET", "/api/dataset")]
