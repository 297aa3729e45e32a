-- Foundation schema: accounts, the six product tables, the durable work queue.
--
-- Tenant isolation is enforced twice: every query filters by user_id, and row-level security
-- (enabled AND forced, so it binds the table owner too) hides other tenants' rows from a query
-- that forgets to. The app sets the caller per transaction:
--   set_config('app.user_id', '<uuid>', true)  -- a tenant's request
--   set_config('app.scope', 'system', true)    -- auth lookups and background workers
-- With neither set, every tenant table reads as empty (fail closed).

CREATE FUNCTION app_user_id() RETURNS uuid
    LANGUAGE sql STABLE
    AS $$ SELECT nullif(current_setting('app.user_id', true), '')::uuid $$;

CREATE FUNCTION app_is_system() RETURNS boolean
    LANGUAGE sql STABLE
    AS $$ SELECT coalesce(current_setting('app.scope', true), '') = 'system' $$;

-- updated_at maintenance for every table that has one.
CREATE FUNCTION touch_updated_at() RETURNS trigger
    LANGUAGE plpgsql
    AS $$ BEGIN NEW.updated_at = now(); RETURN NEW; END $$;

-- ---------------------------------------------------------------------------------------------
-- Accounts
-- ---------------------------------------------------------------------------------------------

CREATE TABLE users (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email         text NOT NULL,
    password_hash text NOT NULL,
    display_name  text,
    disabled_at   timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_email_lowercase CHECK (email = lower(email)),
    CONSTRAINT users_email_shape CHECK (email ~ '^[^@\s]+@[^@\s]+$' AND length(email) <= 254)
);
CREATE UNIQUE INDEX users_email_key ON users (email);
CREATE TRIGGER users_touch BEFORE UPDATE ON users FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

CREATE TABLE sessions (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash   text NOT NULL UNIQUE,          -- sha256 of the cookie value; the value itself is never stored
    user_agent   text,
    ip           text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
CREATE INDEX sessions_user_idx ON sessions (user_id);
CREATE INDEX sessions_expires_idx ON sessions (expires_at);

CREATE TABLE api_tokens (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    token_prefix text NOT NULL,                 -- first characters, to recognise a token in a list
    token_hash   text NOT NULL UNIQUE,
    last_used_at timestamptz,
    revoked_at   timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX api_tokens_user_idx ON api_tokens (user_id, created_at DESC);

-- Failed logins, for the rate limit (kept in Postgres so every replica sees the same count).
CREATE TABLE login_attempts (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email        text NOT NULL,
    ip           text NOT NULL,
    attempted_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_attempts_email_idx ON login_attempts (email, attempted_at);
CREATE INDEX login_attempts_ip_idx ON login_attempts (ip, attempted_at);

-- ---------------------------------------------------------------------------------------------
-- Datasets
-- ---------------------------------------------------------------------------------------------

CREATE TABLE datasets (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id              uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name                 text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description          text CHECK (length(description) <= 5000),
    file_name            text NOT NULL CHECK (length(file_name) BETWEEN 1 AND 255),
    file_size            bigint NOT NULL CHECK (file_size > 0 AND file_size <= 524288000),
    format               text CHECK (format IN ('brightrun_v4_json', 'brightrun_v4_jsonl', 'openai_chat',
                                                'alpaca', 'sharegpt')),
    status               text NOT NULL DEFAULT 'uploading'
                         CHECK (status IN ('uploading', 'validating', 'ready', 'invalid')),
    storage_key          text NOT NULL,
    normalized_key       text,
    sha256               text,
    total_training_pairs integer,
    conversations        integer,
    total_messages       integer,
    total_tokens         bigint,
    assistant_tokens     bigint,
    avg_turns            double precision,
    over_length_count    integer,
    token_distribution   jsonb,                 -- {min, p50, p95, max, histogram}
    statistics           jsonb,                 -- everything else the validator measured
    error_counts         jsonb NOT NULL DEFAULT '{}',
    validation_errors    jsonb NOT NULL DEFAULT '[]',
    sample               jsonb,
    training_ready       boolean NOT NULL DEFAULT false,
    validated_at         timestamptz,
    deleted_at           timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT datasets_ready_means_valid CHECK (NOT training_ready OR status = 'ready')
);
CREATE INDEX datasets_user_idx ON datasets (user_id, created_at DESC) WHERE deleted_at IS NULL;
CREATE INDEX datasets_user_status_idx ON datasets (user_id, status) WHERE deleted_at IS NULL;
CREATE TRIGGER datasets_touch BEFORE UPDATE ON datasets FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

-- ---------------------------------------------------------------------------------------------
-- Training jobs and their metrics
-- ---------------------------------------------------------------------------------------------

CREATE TABLE training_jobs (
    id                        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id                   uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    dataset_id                uuid NOT NULL REFERENCES datasets (id),
    base_model                text NOT NULL,
    preset                    text NOT NULL CHECK (preset IN ('fast', 'balanced', 'quality', 'custom')),
    hyperparameters           jsonb NOT NULL,   -- the typed configuration, exactly as sent to the worker
    gpu_type                  text NOT NULL,
    gpu_count                 integer NOT NULL DEFAULT 1 CHECK (gpu_count BETWEEN 1 AND 8),
    backend                   text NOT NULL CHECK (backend IN ('runpod', 'local')),
    status                    text NOT NULL DEFAULT 'queued'
                              CHECK (status IN ('queued', 'initializing', 'running', 'completed', 'failed',
                                                'cancelled')),
    current_stage             text NOT NULL DEFAULT 'queued',
    progress                  double precision NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
    current_epoch             double precision,
    current_step              integer NOT NULL DEFAULT 0,
    total_steps               integer,
    current_metrics           jsonb,
    external_job_id           text,
    estimate                  jsonb,            -- snapshot of the estimate at creation
    estimated_total_cost      numeric(12, 6),
    budget_cap                numeric(12, 6) CHECK (budget_cap IS NULL OR budget_cap > 0),
    current_cost              numeric(12, 6) NOT NULL DEFAULT 0,
    final_cost                numeric(12, 6),
    execution_ms              bigint,
    delay_ms                  bigint,
    error_code                text,
    error_message             text,
    retry_count               integer NOT NULL DEFAULT 0,
    cancel_requested_at       timestamptz,
    last_progress_at          timestamptz,
    queued_at                 timestamptz NOT NULL DEFAULT now(),
    started_at                timestamptz,
    completed_at              timestamptz,
    estimated_completion_at   timestamptz,
    created_at                timestamptz NOT NULL DEFAULT now(),
    updated_at                timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX training_jobs_user_idx ON training_jobs (user_id, created_at DESC);
CREATE INDEX training_jobs_user_status_idx ON training_jobs (user_id, status);
CREATE INDEX training_jobs_active_idx ON training_jobs (status) WHERE status IN ('queued', 'initializing', 'running');
CREATE UNIQUE INDEX training_jobs_external_idx ON training_jobs (backend, external_job_id)
    WHERE external_job_id IS NOT NULL;
CREATE TRIGGER training_jobs_touch BEFORE UPDATE ON training_jobs FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

CREATE TABLE metrics_points (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    job_id          uuid NOT NULL REFERENCES training_jobs (id) ON DELETE CASCADE,
    step            integer NOT NULL CHECK (step >= 0),
    epoch           double precision,
    training_loss   double precision,
    validation_loss double precision,
    learning_rate   double precision,
    grad_norm       double precision,
    tokens_per_sec  double precision,
    gpu_util        double precision,
    elapsed_s       double precision,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT metrics_points_job_step_key UNIQUE (job_id, step)
);
CREATE INDEX metrics_points_user_idx ON metrics_points (user_id);

-- Every event of a job (stage changes, metrics, errors), in order: the SSE replay log.
CREATE TABLE job_events (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    job_id     uuid NOT NULL REFERENCES training_jobs (id) ON DELETE CASCADE,
    kind       text NOT NULL,
    payload    jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX job_events_job_idx ON job_events (job_id, id);
CREATE INDEX job_events_user_idx ON job_events (user_id, id);

-- ---------------------------------------------------------------------------------------------
-- Model artifacts, costs, notifications
-- ---------------------------------------------------------------------------------------------

CREATE TABLE model_artifacts (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id          uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    job_id           uuid NOT NULL UNIQUE REFERENCES training_jobs (id),
    dataset_id       uuid NOT NULL REFERENCES datasets (id),
    name             text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    version          integer NOT NULL DEFAULT 1 CHECK (version >= 1),
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'verifying', 'ready', 'failed')),
    base_model       text NOT NULL,
    files            jsonb NOT NULL DEFAULT '[]',   -- [{name, key, size, sha256}]
    quality_metrics  jsonb,                         -- {overall_score 1-5, ...}
    training_summary jsonb,
    configuration    jsonb,
    model_card       text,
    deleted_at       timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX model_artifacts_user_idx ON model_artifacts (user_id, created_at DESC);
CREATE TRIGGER model_artifacts_touch BEFORE UPDATE ON model_artifacts FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

CREATE TABLE cost_records (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    job_id       uuid NOT NULL REFERENCES training_jobs (id),
    cost_type    text NOT NULL CHECK (cost_type IN ('compute', 'storage', 'transfer')),
    amount       numeric(12, 6) NOT NULL CHECK (amount >= 0),
    gpu_type     text,
    gpu_count    integer,
    seconds      double precision CHECK (seconds >= 0),
    rate_per_s   numeric(12, 8),
    billing_date date NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT cost_records_job_type_key UNIQUE (job_id, cost_type)   -- exactly once per job and type
);
CREATE INDEX cost_records_user_date_idx ON cost_records (user_id, billing_date);

CREATE TABLE notifications (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    type       text NOT NULL,
    title      text NOT NULL,
    message    text NOT NULL,
    priority   text NOT NULL DEFAULT 'normal' CHECK (priority IN ('low', 'normal', 'high')),
    action_url text,
    metadata   jsonb NOT NULL DEFAULT '{}',
    read_at    timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notifications_user_idx ON notifications (user_id, created_at DESC);
CREATE INDEX notifications_unread_idx ON notifications (user_id) WHERE read_at IS NULL;

-- ---------------------------------------------------------------------------------------------
-- The durable work queue: validation, submission, polling, finalisation.
-- Workers lease rows with SELECT ... FOR UPDATE SKIP LOCKED; an expired lease is taken over.
-- ---------------------------------------------------------------------------------------------

CREATE TABLE work_queue (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id      uuid REFERENCES users (id) ON DELETE CASCADE,
    kind         text NOT NULL,
    payload      jsonb NOT NULL DEFAULT '{}',
    dedupe_key   text UNIQUE,                   -- one live task per subject (e.g. 'validate:<dataset>')
    status       text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running', 'done', 'failed')),
    attempts     integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL DEFAULT 5 CHECK (max_attempts >= 1),
    run_at       timestamptz NOT NULL DEFAULT now(),
    leased_by    text,
    leased_until timestamptz,
    last_error   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX work_queue_ready_idx ON work_queue (run_at) WHERE status IN ('pending', 'running');
CREATE TRIGGER work_queue_touch BEFORE UPDATE ON work_queue FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

-- ---------------------------------------------------------------------------------------------
-- Row-level security, enabled and forced on every tenant table.
-- ---------------------------------------------------------------------------------------------

ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE users FORCE ROW LEVEL SECURITY;
CREATE POLICY users_isolation ON users
    USING (id = app_user_id() OR app_is_system())
    WITH CHECK (id = app_user_id() OR app_is_system());

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['sessions', 'api_tokens', 'datasets', 'training_jobs', 'metrics_points',
                             'job_events', 'model_artifacts', 'cost_records', 'notifications', 'work_queue']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY %I ON %I USING (user_id = app_user_id() OR app_is_system()) '
                       'WITH CHECK (user_id = app_user_id() OR app_is_system())', t || '_isolation', t);
    END LOOP;
END $$;

-- Login attempts belong to no tenant; only the system scope touches them.
ALTER TABLE login_attempts ENABLE ROW LEVEL SECURITY;
ALTER TABLE login_attempts FORCE ROW LEVEL SECURITY;
CREATE POLICY login_attempts_system ON login_attempts USING (app_is_system()) WITH CHECK (app_is_system());
