-- Checkpoints and resume: the latest checkpoint a worker uploaded (its attempt's folder holds the
-- file), the step an attempt resumed from, and the automatic resumes of runs lost with their backend.
ALTER TABLE training_jobs
    ADD COLUMN checkpoint_attempt integer,
    ADD COLUMN checkpoint_step    integer CHECK (checkpoint_step > 0),
    ADD COLUMN checkpoint_size    bigint CHECK (checkpoint_size > 0),
    ADD COLUMN checkpoint_sha256  text CHECK (checkpoint_sha256 ~ '^[0-9a-f]{64}$'),
    ADD COLUMN resumed_from_step  integer CHECK (resumed_from_step > 0),
    ADD COLUMN auto_resumes       integer NOT NULL DEFAULT 0 CHECK (auto_resumes >= 0);
