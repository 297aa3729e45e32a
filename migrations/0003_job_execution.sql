-- Job execution: idempotent events, the worker's final result and the run's limits.

-- Each event has a key unique within its job ("a0:metrics:12"), so a chunk seen twice — once
-- from /stream, again from the final aggregate output, or after a crash — is stored once.
ALTER TABLE job_events ADD COLUMN dedupe_key text;
CREATE UNIQUE INDEX job_events_job_dedupe_idx ON job_events (job_id, dedupe_key) WHERE dedupe_key IS NOT NULL;

ALTER TABLE training_jobs
    ADD COLUMN worker_result        jsonb,    -- the worker's final `result` event
    ADD COLUMN execution_timeout_ms bigint,   -- policy.executionTimeout sent with the job
    ADD COLUMN tokens_per_sec       double precision;  -- measured throughput (calibration)
