-- Models: what a verified adapter carries beyond the foundation's columns.
ALTER TABLE model_artifacts
    ADD COLUMN description text CHECK (length(description) <= 2000),
    ADD COLUMN samples     jsonb,       -- [{prompt, reference, base, adapter}] from the worker
    ADD COLUMN attempt     integer NOT NULL DEFAULT 0;  -- the job attempt whose files these are
CREATE INDEX model_artifacts_quality_idx
    ON model_artifacts (user_id, ((quality_metrics->>'overall_score')::int) DESC, created_at DESC)
    WHERE deleted_at IS NULL;
