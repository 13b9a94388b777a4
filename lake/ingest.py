"""Applying normalised records to the lake, a batch at a time.

A batch is planned in memory against the rows it touches (loaded at the transaction's base
state), then committed with one Delta commit per table. Records apply in line order, so a later
record of a batch sees what an earlier one did. The rules (reference §4):

* datapoint: create (id derived from upload and line) or update by ``id``; metadata replaced;
* tags: upsert per name, a null value deletes one, ``tags: null`` deletes all;
* one groundtruth per (datapoint, task type) and one prediction per (datapoint, task type,
  model name): a new one replaces the old together with its children and vectors;
* an attachment sent with its ``id`` is updated in place (prediction metrics merged);
* child lists append, update elements by ``id``, and a null or empty list deletes them all.

Each record is checked before it changes anything, so a failing record leaves no trace.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from lake.batch import BatchCounts, FastUpdate, IdSource
from lake.errors import RecordError
from lake.lake import LakeState, Transaction, sql_text
from lake.records import AttachmentSpec, ChildSpec, RecordSpec, VectorSpec, json_text, task_key
from lake.tables import ATTACHMENT_CHILDREN, SCHEMAS, empty

Row = dict[str, Any]
_PARENT_COLUMN = {"predictions": "prediction", "groundtruths": "groundtruth"}


class Changes:
    """Rows to upsert and ids to delete, per table, for one batch."""

    def __init__(self) -> None:
        self.upserts: dict[str, dict[str, Row]] = defaultdict(dict)
        self.deletes: dict[str, dict[str, Row]] = defaultdict(dict)
        self.existing: dict[str, set[str]] = defaultdict(set)
        # in columns: new rows of existing datapoints, and (id, datapoint) of rows to delete
        self.added: dict[str, list[pa.Table]] = defaultdict(list)
        self.removed: dict[str, list[pa.Table]] = defaultdict(list)

    def put(self, table: str, row: Row) -> None:
        self.upserts[table][row["id"]] = row

    def drop(self, table: str, row: Row) -> None:
        self.upserts[table].pop(row["id"], None)
        if row["id"] in self.existing[table]:
            self.deletes[table][row["id"]] = row

    def commit(self, txn: Transaction, *, new_rows: dict[str, pa.Table] | None = None) -> None:
        """Commit every table once; ``new_rows`` are extra rows that are all new."""
        new_rows = new_rows or {}
        known = self.existing["datapoints"]
        appends: dict[str, pa.Table] = {}
        for table in SCHEMAS:
            rows = list(self.upserts.get(table, {}).values())
            deletes = list(self.deletes.get(table, {}).values())
            arrow = pa.concat_tables(
                [
                    pa.Table.from_pylist(rows, schema=SCHEMAS[table]),
                    *([new_rows[table]] if table in new_rows else []),
                    *self.added.get(table, []),
                ]
            )
            removed = self.removed.get(table, [])
            removed_ids = [i for part in removed for i in part.column("id").to_pylist()]
            if arrow.num_rows == 0 and not deletes and not removed_ids:
                continue
            touches_existing = (
                bool(deletes)
                or bool(removed_ids)
                or any(row["id"] in self.existing[table] for row in rows)
            )
            key = _DATAPOINT_KEY.get(table)
            if not touches_existing:
                appends[table] = arrow
            elif key is None:
                txn.upsert(table, arrow, [row["id"] for row in deletes])
            else:
                # Rewrite the key ranges of the datapoints touched (the old ones, and the new
                # ones of this batch): rows changed or deleted there are replaced by ``arrow``.
                keys = set(arrow.column(key).to_pylist()) | {row[key] for row in deletes}
                for part in removed:
                    keys.update(part.column(key).to_pylist())
                ranges = [_span(sorted(keys & known)), _span(sorted(keys - known))]
                changed = [row["id"] for row in rows] + [row["id"] for row in deletes]
                changed += removed_ids
                drop = pc.field("id").isin(pa.array(sorted(changed), pa.string()))
                txn.replace(table, key, [r for r in ranges if r is not None], drop, arrow)
        txn.append_all(appends)


_DATAPOINT_KEY = {
    name: "id" if name == "datapoints" else "datapoint"
    for name, schema in SCHEMAS.items()
    if name == "datapoints" or "datapoint" in schema.names
}


def _span(keys: list[str]) -> tuple[str, str] | None:
    return (keys[0], keys[-1]) if keys else None


@dataclass
class Attachment:
    row: Row
    children: dict[str, dict[str, Row]] = field(
        default_factory=lambda: {kind: {} for kind in ATTACHMENT_CHILDREN}
    )
    vectors: dict[tuple[str, str], Row] = field(default_factory=dict)


@dataclass
class Datapoint:
    row: Row
    tags: dict[str, Row] = field(default_factory=dict)
    groundtruths: dict[str, Attachment] = field(default_factory=dict)
    predictions: dict[tuple[str, str], Attachment] = field(default_factory=dict)

    def attachments(self, kind: str) -> dict[Any, Attachment]:
        return self.groundtruths if kind == "groundtruths" else self.predictions


# the columns that identify rows, for those a batch can only replace or delete
_KEYS = ["id", "organization_id"]
_ATTACHMENT_KEYS = {
    "groundtruths": ["id", "organization_id", "datapoint", "task_type"],
    "predictions": ["id", "organization_id", "datapoint", "task_type", "model_name"],
}
_CHILD_KEYS = ["id", "organization_id", "datapoint", "prediction", "groundtruth"]
_VECTOR_KEYS = ["id", "organization_id", "datapoint", "prediction", "type", "model_name"]


def _key_of(kind: str, row: Row) -> Any:
    key = task_key(row["task_type"])
    return key if kind == "groundtruths" else (key, row.get("model_name") or "")


class BatchPlanner:
    """Loads what a batch touches, applies its records in order, and collects the changes."""

    def __init__(
        self, txn: Transaction, *, organization_id: str, id_source: IdSource, now: datetime
    ) -> None:
        self.txn = txn
        self.state: LakeState = txn.base
        self.org = organization_id
        self.id_source = id_source
        # rows are planned as Python dicts; times stay integers (microseconds since the
        # epoch) there, since building millions of datetime objects costs more than the rest
        self.now = int(now.timestamp() * 1_000_000)
        self.changes = Changes()
        self.datapoints: dict[str, Datapoint] = {}
        self.attachment_owner: dict[str, tuple[str, str]] = {}  # att id -> (kind, datapoint)
        self.known_parents: set[str] = set()
        self.counts = BatchCounts()

    # -- loading -------------------------------------------------------------------------------
    def load(self, specs: Sequence[RecordSpec]) -> None:
        datapoint_ids = {s.id for s in specs if s.id is not None}
        attachment_ids = {
            a.id for s in specs for a in (*s.groundtruths, *s.predictions) if a.id is not None
        }
        parent_ids = {
            s.fields["parent_datapoint"] for s in specs if s.fields.get("parent_datapoint")
        }
        if attachment_ids:
            for kind in ("groundtruths", "predictions"):
                owners = self._read(kind, "id", attachment_ids, columns=["datapoint"])
                datapoint_ids.update(owners.column("datapoint").to_pylist())
        if parent_ids - datapoint_ids:
            found = self._read("datapoints", "id", parent_ids - datapoint_ids, columns=["id"])
            self.known_parents.update(found.column("id").to_pylist())
        if not datapoint_ids:
            return
        # whole rows only where a record may rewrite them; keys suffice to replace or delete
        whole = any(spec.fields for spec in specs if spec.id is not None)
        for row in self._rows("datapoints", "id", datapoint_ids, None if whole else _KEYS):
            self.datapoints[row["id"]] = Datapoint(row)
            self.known_parents.add(row["id"])
        self._load_children(set(self.datapoints), specs, bool(attachment_ids))

    def _read(
        self, table: str, column: str, values: Iterable[str], columns: list[str] | None = None
    ) -> pa.Table:
        ordered = sorted(values)
        if not ordered:
            return empty(table).select(columns) if columns is not None else empty(table)
        condition = pc.field(column).isin(pa.array(ordered, pa.string())) & (
            pc.field("organization_id") == self.org
        )
        # the key range lets the reader skip whole files by their statistics
        prune = f"{column} >= {sql_text(ordered[0])} AND {column} <= {sql_text(ordered[-1])}"
        return self.txn.lake.read(
            table, state=self.state, columns=columns, filter=condition, prune=prune
        )

    def _rows(
        self, table: str, column: str, values: Iterable[str], columns: list[str] | None = None
    ) -> list[Row]:
        read = self._read(table, column, values, columns)
        for index, column_type in enumerate(read.schema.types):
            if pa.types.is_timestamp(column_type):
                name = read.schema.names[index]
                read = read.set_column(index, name, read.column(index).cast(pa.int64()))
        rows = read.to_pylist()
        self.changes.existing[table].update(row["id"] for row in rows)
        return rows

    def _load_children(
        self, datapoint_ids: set[str], specs: Sequence[RecordSpec], by_id: bool
    ) -> None:
        """Load the rows under these datapoints of the tables the batch's records touch.

        Attachments and their children are loaded whole only when a record updates one by id
        (``by_id``); otherwise they can only be replaced, for which their keys suffice.
        """
        if any(spec.tags_given for spec in specs):
            for row in self._rows("tags", "datapoint", datapoint_ids):
                self.datapoints[row["datapoint"]].tags[row["name"]] = row
        kinds = [
            kind
            for kind in ("groundtruths", "predictions")
            if any(getattr(spec, kind) for spec in specs)
        ]
        if not kinds:
            return
        loaded: dict[str, Attachment] = {}
        for kind in kinds:
            columns = None if by_id else _ATTACHMENT_KEYS[kind]
            for row in self._rows(kind, "datapoint", datapoint_ids, columns):
                attachment = Attachment(row)
                loaded[row["id"]] = attachment
                self.attachment_owner[row["id"]] = (kind, row["datapoint"])
                self.datapoints[row["datapoint"]].attachments(kind)[_key_of(kind, row)] = attachment
        for child in ATTACHMENT_CHILDREN:
            columns = None if by_id else _CHILD_KEYS
            for row in self._rows(child, "datapoint", datapoint_ids, columns):
                parent = loaded.get(row["prediction"] or row["groundtruth"] or "")
                if parent is not None:
                    parent.children[child][row["id"]] = row
        if "predictions" not in kinds:
            return
        for row in self._rows("feature_vectors", "datapoint", datapoint_ids, _VECTOR_KEYS):
            parent = loaded.get(row["prediction"] or "")
            if parent is not None:
                parent.vectors[(row["type"], row["model_name"])] = row

    # -- plain updates, in columns --------------------------------------------------------------
    def apply_updates(self, update: FastUpdate) -> tuple[list[RecordError], np.ndarray]:
        """Apply plain updates (their datapoints are named by no other record of the batch):
        each new groundtruth or prediction replaces the datapoint's one of the same task (and
        model) with its children and vectors. An unknown datapoint is a per-record error.
        Return those errors, and which updates named a datapoint of the lake."""
        found = self._read("datapoints", "id", update.datapoints.to_pylist(), columns=["id"])
        exists = _mask(pc.is_in(update.datapoints, value_set=found.column("id")))
        errors = [
            RecordError(f"Datapoint {datapoint} not found", field="id", line=int(line))
            for datapoint, line in zip(
                update.datapoints.filter(pa.array(~exists)).to_pylist(),
                update.lines[~exists].tolist(),
                strict=True,
            )
        ]
        datapoints = update.datapoints.filter(pa.array(exists))
        self.changes.existing["datapoints"].update(datapoints.to_pylist())
        self.counts.datapoints_updated += len(datapoints)
        tables = {
            name: rows if exists.all() else rows.filter(pc.is_in(rows["datapoint"], datapoints))
            for name, rows in update.tables.items()
        }
        replaced: list[pa.Table] = []
        for kind in ("groundtruths", "predictions"):
            new = tables.get(kind)
            if new is None or new.num_rows == 0:
                continue
            setattr(self.counts, kind, getattr(self.counts, kind) + new.num_rows)
            self.changes.added[kind].append(new)
            columns = _ATTACHMENT_KEYS[kind]
            old = self._read(kind, "datapoint", pc.unique(new["datapoint"]).to_pylist(), columns)
            gone = old.filter(pc.is_in(_slot_keys(kind, old), value_set=_slot_keys(kind, new)))
            if gone.num_rows:
                self.changes.removed[kind].append(gone.select(["id", "datapoint"]))
                replaced.append(gone.select(["id", "datapoint"]))
        if "feature_vectors" in tables:
            self.changes.added["feature_vectors"].append(tables["feature_vectors"])
        if replaced:
            self._remove_children(pa.concat_tables(replaced))
        return errors, exists

    def _remove_children(self, parents: pa.Table) -> None:
        """Delete the children and vectors of the attachments ``parents`` (id, datapoint)."""
        owners = pc.unique(parents["datapoint"]).to_pylist()
        parent_ids = parents["id"]
        for table in (*ATTACHMENT_CHILDREN, "feature_vectors"):
            links = ["prediction"] if table == "feature_vectors" else ["prediction", "groundtruth"]
            rows = self._read(table, "datapoint", owners, ["id", "datapoint", *links])
            under = None
            for link in links:
                match = pc.is_in(rows[link], value_set=parent_ids)
                under = match if under is None else pc.or_(under, match)
            if rows.num_rows and under is not None:
                gone = rows.filter(pc.fill_null(under, False)).select(["id", "datapoint"])
                if gone.num_rows:
                    self.changes.removed[table].append(gone)

    # -- applying ------------------------------------------------------------------------------
    def apply(self, spec: RecordSpec) -> None:
        """Apply one record, or raise RecordError having changed nothing."""
        datapoint = self._resolve(spec)
        slots = _Slots(spec.line, self.id_source)
        if datapoint is None:
            datapoint = self._create(spec, slots)
        else:
            self._update(datapoint, spec)
        if spec.tags_given:
            self._apply_tags(datapoint, spec.tags, slots)
        for attachment in (*spec.groundtruths, *spec.predictions):
            self._apply_attachment(datapoint, attachment, slots)
        self.counts.groundtruths += len(spec.groundtruths)
        self.counts.predictions += len(spec.predictions)

    def _resolve(self, spec: RecordSpec) -> Datapoint | None:
        """Check every id the record names, before anything changes."""
        datapoint = None
        if spec.id is not None:
            datapoint = self.datapoints.get(spec.id)
            if datapoint is None:
                raise RecordError(f"Datapoint {spec.id} not found", field="id", line=spec.line)
        parent = spec.fields.get("parent_datapoint")
        if parent is not None and parent not in self.known_parents:
            raise RecordError(
                f"parent datapoint {parent} not found", field="parent_datapoint", line=spec.line
            )
        for index, attachment in enumerate([*spec.groundtruths, *spec.predictions]):
            where = (
                f"groundtruths[{index}]"
                if index < len(spec.groundtruths)
                else f"predictions[{index - len(spec.groundtruths)}]"
            )
            if attachment.id is None:
                continue
            owner = self.attachment_owner.get(attachment.id)
            if owner is None or owner[0] != attachment.kind:
                raise RecordError(
                    f"{attachment.kind[:-1].capitalize()} {attachment.id} not found",
                    field=f"{where}.id",
                    line=spec.line,
                )
            if datapoint is None or owner[1] != datapoint.row["id"]:
                raise RecordError(
                    f"{attachment.kind[:-1]} {attachment.id} belongs to datapoint "
                    f"{owner[1]}, not to this record's",
                    field=f"{where}.id",
                    line=spec.line,
                )
            existing = self._find(datapoint, attachment)
            for child_kind, children in attachment.children.items():
                for position, child in enumerate(children or []):
                    if child.id is not None and child.id not in existing.children[child_kind]:
                        raise RecordError(
                            f"{child_kind[:-1] if child_kind != 'bboxes' else 'bbox'} "
                            f"{child.id} not found",
                            line=spec.line,
                            field=f"{where}.{child_kind}[{position}].id",
                        )
        return datapoint

    def _find(self, datapoint: Datapoint, spec: AttachmentSpec) -> Attachment:
        for attachment in datapoint.attachments(spec.kind).values():
            if attachment.row["id"] == spec.id:
                return attachment
        raise AssertionError("resolved attachment vanished")

    def _create(self, spec: RecordSpec, slots: _Slots) -> Datapoint:
        row: Row = {
            "id": slots.next(first=True),
            "organization_id": self.org,
            "created_at": self.now,
            "request_id": None,
            "type": None,
            "metadata": None,
            "text": None,
            "parent_datapoint": None,
            **spec.fields,
        }
        datapoint = Datapoint(row)
        self.datapoints[row["id"]] = datapoint
        self.known_parents.add(row["id"])
        self.changes.put("datapoints", row)
        self.counts.datapoints_created += 1
        return datapoint

    def _update(self, datapoint: Datapoint, spec: RecordSpec) -> None:
        if spec.fields:
            datapoint.row = {**datapoint.row, **spec.fields}
            self.changes.put("datapoints", datapoint.row)
        self.counts.datapoints_updated += 1

    def _apply_tags(
        self, datapoint: Datapoint, tags: dict[str, str | None] | None, slots: _Slots
    ) -> None:
        if tags is None:
            for row in datapoint.tags.values():
                self.changes.drop("tags", row)
            datapoint.tags.clear()
            return
        for name, value in tags.items():
            current = datapoint.tags.get(name)
            if value is None:
                if current is not None:
                    self.changes.drop("tags", current)
                    del datapoint.tags[name]
            elif current is None:
                row = {
                    "id": slots.next(),
                    "organization_id": self.org,
                    "datapoint": datapoint.row["id"],
                    "name": name,
                    "value": value,
                    "created_at": self.now,
                }
                datapoint.tags[name] = row
                self.changes.put("tags", row)
            elif current["value"] != value:
                current = {**current, "value": value}
                datapoint.tags[name] = current
                self.changes.put("tags", current)

    # -- attachments ---------------------------------------------------------------------------
    def _apply_attachment(self, datapoint: Datapoint, spec: AttachmentSpec, slots: _Slots) -> None:
        kind = spec.kind
        if spec.id is None:
            key = spec.key if kind == "groundtruths" else (spec.key, spec.model_name or "")
            old = datapoint.attachments(kind).pop(key, None)
            if old is not None:
                self._drop_attachment(kind, old)
            row = self._new_attachment_row(datapoint, spec, slots)
            attachment = Attachment(row)
            datapoint.attachments(kind)[key] = attachment
            self.attachment_owner[row["id"]] = (kind, datapoint.row["id"])
        else:
            attachment = self._find(datapoint, spec)
            old_key = _key_of(kind, attachment.row)
            attachment.row = self._merged_row(attachment.row, spec)
            new_key = _key_of(kind, attachment.row)
            if new_key != old_key:  # a task type or model change moves it to another slot
                attachments = datapoint.attachments(kind)
                attachments.pop(old_key, None)
                displaced = attachments.pop(new_key, None)
                if displaced is not None:
                    self._drop_attachment(kind, displaced)
                attachments[new_key] = attachment
        self.changes.put(kind, attachment.row)
        for child_kind, children in spec.children.items():
            self._apply_children(datapoint, kind, attachment, child_kind, children, slots)
        for vector in spec.vectors:
            self._apply_vector(datapoint, attachment, vector, slots)

    def _drop_attachment(self, kind: str, attachment: Attachment) -> None:
        self.changes.drop(kind, attachment.row)
        self.attachment_owner.pop(attachment.row["id"], None)
        for child_kind, rows in attachment.children.items():
            for row in rows.values():
                self.changes.drop(child_kind, row)
        for row in attachment.vectors.values():
            self.changes.drop("feature_vectors", row)

    def _new_attachment_row(self, datapoint: Datapoint, spec: AttachmentSpec, slots: _Slots) -> Row:
        row: Row = dict.fromkeys(SCHEMAS[spec.kind].names)
        row.update(
            id=slots.next(),
            organization_id=self.org,
            datapoint=datapoint.row["id"],
            task_type=spec.task_type,
            created_at=self.now,
        )
        if spec.kind == "predictions":
            row["model_name"] = spec.model_name or ""
            row["metrics"] = json_text(spec.metrics) if spec.metrics else None
        row.update(spec.fields)
        return row

    def _merged_row(self, current: Row, spec: AttachmentSpec) -> Row:
        row = {**current, **spec.fields}
        if spec.task_type is not None:
            row["task_type"] = spec.task_type
        if spec.kind == "predictions":
            if spec.model_name is not None:
                row["model_name"] = spec.model_name
            if spec.metrics:
                merged = {**_json(current.get("metrics")), **spec.metrics}
                row["metrics"] = json_text(merged)
        return row

    def _apply_children(
        self,
        datapoint: Datapoint,
        kind: str,
        attachment: Attachment,
        child_kind: str,
        children: list[ChildSpec] | None,
        slots: _Slots,
    ) -> None:
        current = attachment.children[child_kind]
        if children is None:
            for row in current.values():
                self.changes.drop(child_kind, row)
            current.clear()
            return
        for child in children:
            if child.id is not None:
                row = {**current[child.id], **child.fields}
                if child.metrics:
                    row["metrics"] = json_text({**_json(row.get("metrics")), **child.metrics})
            else:
                row = dict.fromkeys(SCHEMAS[child_kind].names)
                row.update(
                    id=slots.next(),
                    organization_id=self.org,
                    datapoint=datapoint.row["id"],
                    created_at=self.now,
                    **child.fields,
                )
                row[_PARENT_COLUMN[kind]] = attachment.row["id"]
                if child.metrics:
                    row["metrics"] = json_text(child.metrics)
            current[row["id"]] = row
            self.changes.put(child_kind, row)

    def _apply_vector(
        self, datapoint: Datapoint, attachment: Attachment, vector: VectorSpec, slots: _Slots
    ) -> None:
        model = attachment.row.get("model_name") or ""
        if vector.clear_all:
            for key in [k for k in attachment.vectors if k[0] == vector.type]:
                self.changes.drop("feature_vectors", attachment.vectors.pop(key))
            return
        name = f"{model}:{vector.layer}" if vector.layer else model
        key = (vector.type, name)
        old = attachment.vectors.pop(key, None)
        if old is not None:
            self.changes.drop("feature_vectors", old)
        if vector.value is None:
            return
        row = {
            "id": slots.next(),
            "organization_id": self.org,
            "type": vector.type,
            "prediction": attachment.row["id"],
            "datapoint": datapoint.row["id"],
            "bbox": None,
            "model_name": name,
            "metadata": None,
            "value": vector.value,
            "shape": vector.shape,
        }
        attachment.vectors[key] = row
        self.changes.put("feature_vectors", row)


class _Slots:
    """Hands out the ids of the rows one record creates, in order."""

    def __init__(self, line: int, source: IdSource) -> None:
        self.line = line
        self.source = source
        self.slot = 0

    def next(self, *, first: bool = False) -> str:
        slot = 0 if first else self.slot + 1
        self.slot = max(self.slot, slot)
        return self.source.make(self.line, slot)


def _mask(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(values.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)


def _slot_keys(kind: str, rows: pa.Table) -> pa.ChunkedArray:
    """Per row, the text of the slot an attachment fills: datapoint, task and (predictions)
    model name, as in :func:`_key_of`."""
    task = pc.if_else(
        pc.equal(rows["task_type"], "SEGMENTATION"), "SEMANTIC_SEGMENTATION", rows["task_type"]
    )
    parts = [rows["datapoint"], task.fill_null("")]
    if kind == "predictions":
        parts.append(rows["model_name"].fill_null(""))
    return pc.binary_join_element_wise(*parts, "|")


def _json(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    value = orjson.loads(text)
    return value if isinstance(value, dict) else {}
