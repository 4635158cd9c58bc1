"""One summary job: the transcription's text through its prompt template and the configured
summarizer. The template and the transcription are read when the job runs, so one deleted or
purged since the summary was requested fails the job with its own error code."""

from __future__ import annotations

from lectern.jobs.claimed import ClaimedJob, JobFailed
from lectern.jobs.queue import COMPLETED
from lectern.store import summaries
from lectern.store.batch_models import PromptTemplateRow, SummaryRow, TranscriptionRow
from lectern.summarize import SummarizationError, SummaryRequest

SUMMARIZATION_FAILED = "SUMMARIZATION_FAILED"
PROMPT_TEMPLATE_NOT_FOUND = "PROMPT_TEMPLATE_NOT_FOUND"
TRANSCRIPTION_NOT_COMPLETED = "TRANSCRIPTION_NOT_COMPLETED"


class SummaryJob(ClaimedJob):
    kind = summaries.KIND
    row: SummaryRow

    async def work(self) -> None:
        async with self.services.db() as s:
            transcription = await s.get(TranscriptionRow, self.row.transcription_id)
            template = await s.get(PromptTemplateRow, self.row.prompt_template_id)
        if template is None or template.deleted_at is not None:
            raise JobFailed(PROMPT_TEMPLATE_NOT_FOUND, "the prompt template does not exist or has been deleted")
        if (transcription is None or transcription.status != COMPLETED or transcription.purged_at is not None
                or transcription.deleted_at is not None):
            raise JobFailed(TRANSCRIPTION_NOT_COMPLETED,
                            "the transcription is not COMPLETED (or its result was deleted) and cannot be summarized")
        request = SummaryRequest(
            transcript=transcription.text or "",
            kind=template.kind,  # type: ignore[arg-type]
            system_prompt=template.system_prompt,
            user_prompt=template.user_prompt,
            language=transcription.language_code,
            date=transcription.created_at.date().isoformat(),
            max_output_tokens=template.max_output_tokens,
            temperature=template.temperature,
        )
        summarizer = self.services.summarizer
        try:
            output = await summarizer.summarize(request)
        except SummarizationError as exc:
            raise JobFailed(SUMMARIZATION_FAILED, str(exc)) from None
        async with self.services.db() as s:
            await self.settle(s, COMPLETED, text=output.text, input_tokens=output.usage.input_tokens,
                              output_tokens=output.usage.output_tokens, summarizer=summarizer.name)
            await s.commit()
