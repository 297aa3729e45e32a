-- Retention and maintenance (engine::maintenance).

-- A deleted dataset's or model's files are removed by a daily chore some time after the row
-- is deleted; this records that they were (deletion itself tries at once, best effort).
ALTER TABLE datasets ADD COLUMN files_purged_at timestamptz;
ALTER TABLE model_artifacts ADD COLUMN files_purged_at timestamptz;
CREATE INDEX datasets_unpurged_idx ON datasets (deleted_at)
    WHERE deleted_at IS NOT NULL AND files_purged_at IS NULL;
CREATE INDEX model_artifacts_unpurged_idx ON model_artifacts (deleted_at)
    WHERE deleted_at IS NOT NULL AND files_purged_at IS NULL;

-- Objects the orphan sweep found with no row that owns them: reported first, deleted by a
-- later sweep only if they are still orphans after the grace period.
CREATE TABLE orphan_objects (
    bucket   text NOT NULL CHECK (bucket IN ('lora-datasets', 'lora-models')),
    key      text NOT NULL,
    size     bigint NOT NULL,
    found_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (bucket, key)
);
ALTER TABLE orphan_objects ENABLE ROW LEVEL SECURITY;
ALTER TABLE orphan_objects FORCE ROW LEVEL SECURITY;
CREATE POLICY orphan_objects_system ON orphan_objects
    USING (app_is_system()) WITH CHECK (app_is_system());

-- Finished tasks are removed by age.
CREATE INDEX work_queue_finished_idx ON work_queue (updated_at) WHERE status IN ('done', 'failed');
