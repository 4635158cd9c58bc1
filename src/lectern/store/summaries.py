"""Summary jobs as the API reads and makes them; cancel, delete, purge and webhooks are
``job_lifecycle``'s, with ``KIND`` saying what a summary's content is."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from lectern.jobs.queue import PENDING
from lectern.store.batch_models import SummaryRow
from lectern.store.job_lifecycle import JobKind


def event_data(row: SummaryRow) -> dict[str, Any]:
    """A webhook's ``data``: enough to act on; the text itself is fetched with the API."""
    return {
        "id": str(row.id),
        "status": row.status,
        "transcriptionId": str(row.transcription_id),
        "promptTemplateId": str(row.prompt_template_id),
        "completionDate": row.completed_at,
        "errors": row.errors,
    }


async def _purge_content(s: AsyncSession, job_id: uuid.UUID) -> None:
    # The token counts stay: they are what the summary cost, for quotas; the text goes.
    await s.execute(update(SummaryRow).where(SummaryRow.id == job_id).values(text=None)
                    .execution_options(synchronize_session=False))


KIND = JobKind(table=SummaryRow, noun="summary", event_data=event_data, purge_content=_purge_content)


async def create(s: AsyncSession, values: dict[str, Any]) -> SummaryRow:
    """A PENDING summary, for the workers to claim."""
    row = SummaryRow(status=PENDING, **values)
    s.add(row)
    await s.commit()
    return row

