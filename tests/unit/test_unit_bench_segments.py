"""bench.segments: its ten segments are valid rules and its generated rows fit the projection's columns."""

from __future__ import annotations

import uuid

from bench.segments import PROJECTION_COLUMNS, TAG_COLUMNS, generate, segments
from services.segmentation.models import ProfileProjection, ProfileTag, TagKind
from shared.crypto import keyring


def test_ten_segments_that_parse() -> None:
    assert len(segments()) == 10


def test_generated_rows_fill_every_column_and_only_known_tags() -> None:
    rows, tags = generate(300, seed=1, tenant=uuid.uuid4())
    assert set(PROJECTION_COLUMNS) == set(ProfileProjection.model_fields)
    assert set(TAG_COLUMNS) == set(ProfileTag.model_fields)
    lines = rows.read().splitlines()
    assert len(lines) == 300
    assert {len(line.split("\t")) for line in lines} == {len(PROJECTION_COLUMNS)}
    tag_lines = [line.split("\t") for line in tags.read().splitlines()]
    assert {len(t) for t in tag_lines} == {len(TAG_COLUMNS)}
    assert {t[1] for t in tag_lines} <= {k.value for k in TagKind}
    assert len({(t[0], t[1], t[2]) for t in tag_lines}) == len(tag_lines)  # the primary key holds
    tenant = uuid.UUID(lines[0].split("\t")[1])
    again, _ = generate(300, seed=1, tenant=tenant)
    assert [_opened(line, tenant) for line in again.read().splitlines()] == [
        _opened(line, tenant) for line in lines
    ]  # deterministic for a seed (but for the sealed values' random nonces)
    row = dict(zip(PROJECTION_COLUMNS, lines[0].split("\t"), strict=True))
    assert row["zip_prefix"] == keyring().open(tenant, row["zip_sealed"])[:5]


def _opened(line: str, tenant: uuid.UUID) -> list[str]:
    """A generated row with its sealed values opened."""
    cells = line.split("\t")
    for name in ("birth_date_sealed", "zip_sealed"):
        at = PROJECTION_COLUMNS.index(name)
        if cells[at] != "\\N":
            cells[at] = keyring().open(tenant, cells[at])
    return cells
