-- Idempotency-Key (DESIGN §6.1): a write that starts paid work or creates a dataset, sent again
-- with the same key and body within 24 hours, answers with the first response and creates
-- nothing. The key is claimed in the same transaction as the write it guards, so a concurrent
-- request with the same key waits on the unique index and then reads the committed response.
CREATE TABLE idempotency_keys (
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key         text NOT NULL,
    -- sha256 of the operation and its canonical request body: the same key with another
    -- request is refused (409).
    fingerprint bytea NOT NULL,
    response    jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
ALTER TABLE idempotency_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE idempotency_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY idempotency_keys_isolation ON idempotency_keys
    USING (user_id = app_user_id() OR app_is_system())
    WITH CHECK (user_id = app_user_id() OR app_is_system());
