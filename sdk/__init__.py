"""Shoal's Python client. It talks HTTP to a Shoal server and imports neither lake nor api.

Configure it with arguments or the environment (``SHOAL_ENDPOINT`` / ``SHOAL_API_KEY``, or the
``DIOPTRA_APP_ENDPOINT`` / ``DIOPTRA_API_KEY`` names)::

    from sdk import upload_to_lake, select_datapoints, Dataset

    upload = upload_to_lake(records, wait=True)
    frame = select_datapoints([{"left": "metadata.width", "op": ">", "right": 100}])
"""

from sdk._client import Client
from sdk._datasets import Dataset, list_datasets
from sdk._errors import (
    APIError,
    BadRequest,
    ConfigError,
    ConnectionFailed,
    MinerFailed,
    NotFound,
    ServerError,
    ShoalError,
    Unauthorized,
    UploadFailed,
)
from sdk._miners import (
    ActivationMiner,
    BadgeMiner,
    CoresetMiner,
    EntropyMiner,
    KNNMiner,
    Miner,
    RandomMiner,
    VarianceMiner,
    WeightedEntropyMiner,
    list_miners,
)
from sdk._query import (
    delete_datapoints,
    delete_groundtruths,
    delete_predictions,
    select_bboxes,
    select_datapoints,
    select_groundtruths,
    select_predictions,
    sql,
)
from sdk._uploads import Upload, upload_to_lake, wait_for_upload, wait_for_uploads

__all__ = [
    "APIError",
    "ActivationMiner",
    "BadRequest",
    "BadgeMiner",
    "Client",
    "ConfigError",
    "ConnectionFailed",
    "CoresetMiner",
    "Dataset",
    "EntropyMiner",
    "KNNMiner",
    "Miner",
    "MinerFailed",
    "NotFound",
    "RandomMiner",
    "ServerError",
    "ShoalError",
    "Unauthorized",
    "Upload",
    "UploadFailed",
    "VarianceMiner",
    "WeightedEntropyMiner",
    "delete_datapoints",
    "delete_groundtruths",
    "delete_predictions",
    "list_datasets",
    "list_miners",
    "select_bboxes",
    "select_datapoints",
    "select_groundtruths",
    "select_predictions",
    "sql",
    "upload_to_lake",
    "wait_for_upload",
    "wait_for_uploads",
]
