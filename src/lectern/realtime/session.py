"""StreamSession: the streaming core every protocol adapter drives.

It owns the audio clock, the input bound, commit rules (manual, VAD, automatic), recording,
persistence and the session's lifecycle. Adapters hand it client events and render its events.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from lectern.auth.principal import Principal
from lectern.realtime import admission
from lectern.realtime.config import ClientInfo, StreamConfig
from lectern.realtime.errors import KEY_NO_LONGER_VALID, ErrorKind, StreamError, database_required
from lectern.realtime.outbox import Outbox, StreamEvents
from lectern.realtime.recording import RecordingWriter
from lectern.realtime.segment import Segment
from lectern.realtime.session_record import SessionRecord
from lectern.services import Services
from lectern.speech.engines.base import RecognizerOptions
from lectern.speech.engines.pool import EngineFailure, PoolExhausted, StreamHandle
from lectern.speech.engines.worker import StreamSpec
from lectern.speech.segmenter import RawSegment, SegmentRules
from lectern.speech.text import remove_disfluencies
from lectern.store import sessions as rows
from lectern.store.models import utcnow

log = logging.getLogger(__name__)

# Audio handed to the recognizer in one request at most: coalescing a backlog makes fewer
# round trips, the cap keeps one stream from holding its worker for long. Where a VAD commit
# falls inside a request is the worker's decision (speech/segmenter.py), so it is exact at any size.
MAX_FEED_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class AudioIn:
    data: bytes
    context: str | None = None  # text said before this audio (ElevenLabs' previous_text)


@dataclass(frozen=True, slots=True)
class CommitIn:
    pass


@dataclass(frozen=True, slots=True)
class ClientClosed:
    """The client ended the stream: ``normal`` for a clean close, False when it vanished."""

    normal: bool


@dataclass(frozen=True, slots=True)
class ClientAway:
    """The connection dropped but the client may come back (resume): the adapter bounds the
    wait, so the idle timeout is suspended until ``ClientBack``."""


@dataclass(frozen=True, slots=True)
class ClientBack:
    """The client is connected again: the idle timeout applies again."""


ClientEvent = AudioIn | CommitIn | ClientClosed | ClientAway | ClientBack


class _End:
    pass


_COMMIT = CommitIn()


class StreamSession:
    def __init__(
        self, services: Services, config: StreamConfig, principal: Principal, handle: StreamHandle
    ) -> None:
        self.id = uuid.uuid4()
        self.config = config
        self._services = services
        self._settings = services.settings
        self._principal = principal
        self._handle = handle
        self._inbox: collections.deque[bytes | CommitIn | _End] = collections.deque()
        self._inbox_ready = asyncio.Event()
        # The audio clock counts the client's bytes: integers, so limits hold exactly at their edge.
        fmt = config.audio_format
        self._bytes_per_second = fmt.sample_rate * fmt.bytes_per_sample
        self._received_bytes = 0
        self._processed_bytes = 0  # what the recognizer has consumed
        self._commit_mark = 0  # stream position (bytes) of the newest commit, executed or queued
        self._segment_start = 0  # stream position (bytes) where the current segment began
        self._segment_count = 0
        self._words_count = 0
        self._last_partial = ""
        self._recording: RecordingWriter | None = None
        self._outbox: Outbox | None = None
        self._stopped = False
        # Where (processed bytes) the tenant's transcription quota runs out; None: no quota.
        self._quota_end: int | None = None
        self._record = SessionRecord(
            services.db, self.id, lease_seconds=self._settings.lease_seconds,
            retry_seconds=self._settings.lease_renew_seconds,
            max_unsaved=self._settings.stream_unsaved_segments_max, api_key_id=principal.api_key_id,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    async def open(
        cls, services: Services, config: StreamConfig, principal: Principal, client: ClientInfo
    ) -> "StreamSession":
        """Reserve a recognizer, create the session row within the tenant's and user's caps and
        quota (realtime/admission.py), and go ACTIVE; or raise StreamError."""
        spec = StreamSpec(
            format=config.audio_format,
            model=config.model.name,
            recognizer=RecognizerOptions(
                keyterms=config.keyterms, source_rate=config.audio_format.sample_rate, language=config.language_code
            ),
            rules=SegmentRules(
                vad=config.vad if config.commit_strategy == "vad" else None,
                max_segment_seconds=services.settings.auto_commit_seconds,
                single_segment=config.single_utterance,
            ),
            return_pcm=config.recording and not config.audio_format.is_engine_native,
        )
        try:
            handle = services.pool.open(spec)
        except PoolExhausted as exc:
            raise StreamError(ErrorKind.RESOURCE_EXHAUSTED, f"Server at capacity: {exc}.") from None
        session = cls(services, config, principal, handle)
        try:
            with database_required():
                await session._create_row(client)
        except BaseException:
            handle.release()
            raise
        return session

    async def _create_row(self, client: ClientInfo) -> None:
        config = self.config
        if config.recording:
            self._recording = RecordingWriter(self._services.recordings_dir, self._principal.tenant_id, self.id)
        seconds_left = await admission.create_row(
            self._services,
            {
                "id": self.id,
                "tenant_id": self._principal.tenant_id,
                "user_id": self._principal.user_id,
                "protocol": config.protocol,
                "requested_model_alias": config.model.requested_alias,
                "resolved_model_name": config.model.name,
                "used_fallback": config.model.used_fallback,
                "language_code": config.language_code or "auto",  # a multilingual model detects it
                "recording_requested": config.recording,
                "recording_path": str(self._recording.path) if self._recording else None,
                "keep_transcript": config.keep_transcript,
                "client_address": client.address,
                "user_agent": client.user_agent,
                "metadata_": config.metadata,
                "config": config.echo,
            },
            config.model.name,
        )
        self._set_quota(0, seconds_left)
        await rows.update_session(self._services.db, self.id, state=rows.ACTIVE)

    async def run(self, client_events: AsyncIterator[ClientEvent], events: StreamEvents) -> StreamError | None:
        """Serve the stream until the client ends it or an error does; the row records how it
        ended, the caller gets the error, if any."""
        self._outbox = Outbox(events)
        error: StreamError | None = None
        state, reason = rows.FINISHED, None
        time_limit = self.config.time_limit_seconds or self._settings.session_time_limit_seconds
        try:
            async with asyncio.timeout(time_limit):
                async with asyncio.TaskGroup() as tasks:
                    processing = tasks.create_task(self._process())
                    lease = tasks.create_task(self._keep_lease())
                    processing.add_done_callback(lambda _: lease.cancel())
                    ending = await self._receive(client_events)
            # The processor has drained everything accepted before the client's close or error.
            if isinstance(ending, StreamError):
                error = ending
            elif not ending.normal:
                state = rows.CANCELLED
        except* StreamError as group:
            error = group.exceptions[0]  # type: ignore[assignment]
        except* TimeoutError:
            error = StreamError(
                ErrorKind.TIME_LIMIT,
                f"Session time limit of {time_limit:g} seconds exceeded.",
            )
        except* EngineFailure as group:
            log.error("engine failure in stream %s: %s", self.id, group.exceptions[0])
            error = StreamError(ErrorKind.ENGINE, f"Transcriber error: {group.exceptions[0]}")
        except* Exception as group:
            log.exception("stream %s failed", self.id, exc_info=group.exceptions[0])
            error = StreamError(ErrorKind.INTERNAL, "Internal server error.")
        if error is not None:
            if error.kind is ErrorKind.IDLE_TIMEOUT:
                state = rows.CANCELLED
            elif error.kind is ErrorKind.TIME_LIMIT and self.config.time_limit_seconds is not None:
                state = rows.FINISHED  # the client's own limit (Reverie's timeout): a normal ending
            else:
                state, reason = rows.FAILED, f"{error.kind.value}: {error.message}"
            # Salvage what was heard, unless the engine failed, the key is no longer good, or
            # the database cannot take more.
            if error.kind not in (ErrorKind.ENGINE, ErrorKind.INTERNAL, ErrorKind.AUTH, ErrorKind.UNAVAILABLE):
                await self._salvage()
        await self._outbox.close(error)
        await self._end(state, reason)
        return error

    async def _salvage(self) -> None:
        """When processing was cut short (the time limit, a client reading nothing), still commit
        what was recognized; after an ending that drained the input there is nothing left."""
        with contextlib.suppress(Exception):
            await self._finish_audio()

    async def _end(self, state: str, reason: str | None) -> None:
        self._handle.release()
        if self._recording:
            self._recording.close()
        await self._record.end(
            state=state,
            end_time=utcnow(),
            failure_reason=reason,
            duration_ms=self._duration_ms(),
            lease_expires_at=None,
        )

    async def abandon(self) -> None:
        """End a session whose client left before ``run`` began."""
        await self._end(rows.CANCELLED, None)

    # -- input -------------------------------------------------------------------------------

    async def _receive(self, client_events: AsyncIterator[ClientEvent]) -> ClientClosed | StreamError:
        """Accept client events until the client closes or errs. Either way everything accepted
        before is still processed and committed: the end marker follows it in the inbox."""
        try:
            ending: ClientClosed | StreamError = await self._accept_all(client_events)
        except StreamError as error:
            ending = error
        self._enqueue(_End())
        return ending

    async def _accept_all(self, client_events: AsyncIterator[ClientEvent]) -> ClientClosed:
        idle = self._settings.idle_timeout_seconds
        iterator = aiter(client_events)
        away = False
        while True:
            try:
                # Not wait_for: on Python 3.11 it can swallow the session time limit's cancellation
                # when a message arrives at the same moment.
                async with asyncio.timeout(None if away else idle):
                    event = await anext(iterator)
            except TimeoutError:
                raise StreamError(
                    ErrorKind.IDLE_TIMEOUT, f"No message from the client for {idle:g} seconds."
                ) from None
            except StopAsyncIteration:
                event = ClientClosed(normal=False)
            if isinstance(event, ClientClosed):
                return event
            if isinstance(event, ClientAway | ClientBack):
                away = isinstance(event, ClientAway)
            elif self._stopped:
                continue
            elif isinstance(event, AudioIn):
                if event.context:
                    self._handle.set_context(event.context)
                self._accept_audio(event.data)
            else:
                self._accept_commit()

    def _accept_audio(self, data: bytes) -> None:
        if not data:
            return
        fmt = self.config.audio_format
        if len(data) > self._settings.max_chunk_bytes:
            raise StreamError(
                ErrorKind.CHUNK_TOO_LARGE,
                f"Audio chunk of {len(data)} bytes exceeds the limit of {self._settings.max_chunk_bytes} bytes.",
            )
        try:
            fmt.check_chunk(data)
        except ValueError as exc:
            raise StreamError(ErrorKind.INPUT, str(exc)) from None
        backlog = self._received_bytes + len(data) - self._processed_bytes
        if backlog > self._settings.max_buffered_audio_seconds * self._bytes_per_second:
            raise StreamError(
                ErrorKind.QUEUE_OVERFLOW,
                f"Audio is arriving faster than it can be processed: more than "
                f"{self._settings.max_buffered_audio_seconds:g} seconds are waiting.",
            )
        self._received_bytes += len(data)
        self._enqueue(data)

    def _accept_commit(self) -> None:
        uncommitted = self._received_bytes - self._commit_mark
        if uncommitted < self._settings.min_commit_seconds * self._bytes_per_second - 1e-6:
            raise StreamError(
                ErrorKind.COMMIT_THROTTLED,
                f"Commit request ignored: only {self._seconds(uncommitted):.2f}s of uncommitted audio. You need "
                f"at least {self._settings.min_commit_seconds:g}s of uncommitted audio before committing.",
            )
        self._commit_mark = self._received_bytes
        self._enqueue(_COMMIT)

    def _stop(self) -> None:
        """End the stream at the newest commit: audio not yet processed is dropped, and what the
        client sends until it closes is ignored."""
        self._stopped = True
        self._inbox = collections.deque(item for item in self._inbox if isinstance(item, _End))

    @property
    def received_bytes(self) -> int:
        """The audio clock: client bytes accepted so far."""
        return self._received_bytes

    @property
    def segment_count(self) -> int:
        return self._segment_count

    @property
    def words_count(self) -> int:
        return self._words_count

    @property
    def duration_ms(self) -> int:
        return self._duration_ms()

    def _enqueue(self, item: bytes | CommitIn | _End) -> None:
        self._inbox.append(item)
        self._inbox_ready.set()

    # -- processing --------------------------------------------------------------------------

    async def _process(self) -> None:
        fmt = self.config.audio_format
        max_bytes = int(MAX_FEED_SECONDS * fmt.sample_rate) * fmt.bytes_per_sample
        while True:
            while not self._inbox:
                self._inbox_ready.clear()
                await self._inbox_ready.wait()
            item = self._inbox.popleft()
            if isinstance(item, _End):
                if not self._stopped:
                    await self._finish_audio()
                return
            if isinstance(item, CommitIn):
                for raw in await self._handle.commit():
                    await self._commit(raw, self._processed_bytes)
                continue
            parts = [item]
            size = len(item)
            while size < max_bytes and self._inbox and isinstance(self._inbox[0], bytes):
                more = self._inbox.popleft()
                assert isinstance(more, bytes)
                parts.append(more)
                size += len(more)
            data = b"".join(parts) if len(parts) > 1 else item
            room = self._quota_room()
            if room is not None and len(data) > room:
                # Recognize up to the quota's end, then end the stream: that audio is counted.
                if room:
                    await self._feed(data[:room])
                raise admission.quota_exceeded()
            await self._feed(data)

    async def _feed(self, data: bytes) -> None:
        result = await self._handle.feed(data)
        start = self._processed_bytes
        self._processed_bytes += len(data)
        ending = next((raw for raw in result.segments if raw.trigger == "vad" and self.config.single_utterance), None)
        if ending is not None:  # the worker recognizes nothing after it: nor is it processed or recorded
            self._processed_bytes = self._position_of(ending)
        if self._recording:
            self._recording.write(result.pcm if result.pcm is not None else data[: self._processed_bytes - start])
        for raw in result.segments:  # closed by the VAD or the segment length, where the audio is
            await self._commit(raw, self._position_of(raw))
            if raw is ending:
                self._stop()
                return
        # After the commits: a partial computed past a segment's end is the next segment's.
        if result.partial is not None and result.partial != self._last_partial:
            self._last_partial = result.partial
            assert self._outbox is not None
            self._outbox.partial(result.partial)

    async def _finish_audio(self) -> None:
        """The end of the client's audio: commit what is left."""
        segments, tail = await self._handle.finish()
        if self._recording and tail:
            self._recording.write(tail)
        for raw in segments:
            await self._commit(raw, self._processed_bytes, final=True)

    def _position_of(self, raw: RawSegment) -> int:
        """Where (client bytes) the worker closed a segment: at most what was processed."""
        sample = self.config.audio_format.bytes_per_sample
        position = int(raw.closed_at * self._bytes_per_second) // sample * sample
        return min(max(position, self._segment_start), self._processed_bytes)

    async def _commit(self, raw: RawSegment, position: int, final: bool = False) -> None:
        """Store, then send, the committed transcript of the audio up to ``position``."""
        if final and position <= self._segment_start and not raw.words:
            return
        words = list(raw.words)
        if self.config.no_verbatim:
            words = remove_disfluencies(words, lambda w: w.text)
        text = " ".join(w.text for w in words)
        segment = Segment(
            index=self._segment_count if text else None,
            text=text,
            words=tuple(words),
            start=words[0].start if words else round(self._seconds(self._segment_start), 3),
            end=round(max(self._seconds(position), words[-1].end if words else 0.0), 3),
            language_code=raw.language or self.config.language_code or "en",
            trigger=raw.trigger,
        )
        if text:
            self._segment_count += 1
            self._words_count += len(words)
        await self._record.commit(
            segment.as_row() if text and self.config.keep_transcript else None,
            {"segment_count": self._segment_count, "words_count": self._words_count,
             "duration_ms": self._duration_ms()},
        )
        self._segment_start = position
        self._commit_mark = max(self._commit_mark, position)
        self._last_partial = ""
        if final and not text:
            return
        assert self._outbox is not None
        self._outbox.committed(segment)

    # -- clock and lease ---------------------------------------------------------------------

    def _seconds(self, nbytes: int) -> float:
        return nbytes / self._bytes_per_second

    def _duration_ms(self) -> int:
        return self._processed_bytes * 1000 // self._bytes_per_second

    def _set_quota(self, recorded_ms: int, seconds_left: float | None) -> None:
        """The quota ends ``seconds_left`` after ``recorded_ms``, the duration the row had when
        the quota was read; in whole milliseconds, as durations are counted."""
        if seconds_left is None:
            self._quota_end = None
            return
        sample = self.config.audio_format.bytes_per_sample
        end_ms = recorded_ms + round(seconds_left * 1000)
        self._quota_end = end_ms * self._bytes_per_second // 1000 // sample * sample

    def _quota_room(self) -> int | None:
        """Bytes the stream may still process before the quota runs out; None: no quota."""
        return None if self._quota_end is None else max(0, self._quota_end - self._processed_bytes)

    async def _keep_lease(self) -> None:
        """Renew the lease (writing segments that wait for the database) until processing ends;
        the stream ends when its API key has been revoked or has expired, on whichever node, or
        when its tenant's transcription quota is used up."""
        while True:
            await asyncio.sleep(self._settings.lease_renew_seconds)
            try:
                key_usable = await self._record.renew(self._duration_ms())
            except Exception:
                log.exception("lease renewal failed for stream %s", self.id)
                continue
            if key_usable is False:
                raise StreamError(ErrorKind.AUTH, KEY_NO_LONGER_VALID)
            if key_usable is not None:  # the row has this stream's duration: read what is left now
                await self._renew_quota()

    async def _renew_quota(self) -> None:
        """Other streams and nodes (and batch jobs) spend from the same quota: re-read it. The
        stream ends at once if it is already past the new end, else when its audio reaches it."""
        try:
            recorded_ms, left = await admission.stream_quota(self._services, self._principal.tenant_id, self.id)
        except Exception:  # the database went away since the renewal: keep the previous end
            log.warning("could not read the quota of stream %s", self.id)
            return
        self._set_quota(recorded_ms, left)
        if self._quota_room() == 0:
            raise admission.quota_exceeded()
