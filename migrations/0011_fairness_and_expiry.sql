-- Leasing fairly: a kind's running tasks per account (accounts with none running go first).
CREATE INDEX work_queue_running_idx ON work_queue (kind, user_id) WHERE status = 'running';

-- Registrations per client address (REGISTRATIONS_PER_HOUR), kept like login attempts.
CREATE TABLE registration_attempts (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ip           text NOT NULL,
    attempted_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX registration_attempts_ip_idx ON registration_attempts (ip, attempted_at);
ALTER TABLE registration_attempts ENABLE ROW LEVEL SECURITY;
ALTER TABLE registration_attempts FORCE ROW LEVEL SECURITY;
CREATE POLICY registration_attempts_system ON registration_attempts
    USING (app_is_system()) WITH CHECK (app_is_system());

-- API tokens may expire (NULL: until revoked).
ALTER TABLE api_tokens ADD COLUMN expires_at timestamptz;

-- Uploads never confirmed are expired by a sweep that looks for them by age.
CREATE INDEX datasets_uploading_idx ON datasets (created_at)
    WHERE status = 'uploading' AND deleted_at IS NULL;
