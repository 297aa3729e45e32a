-- The account's time zone (IANA name): the days of its cost reports and the calendar month of
-- its budget. The browser sends it; the account keeps it.
ALTER TABLE users ADD COLUMN time_zone text NOT NULL DEFAULT 'UTC' CHECK (length(time_zone) BETWEEN 1 AND 64);

-- Notification types are the engine's `NotificationKind`; the database refuses any other.
ALTER TABLE notifications ADD CONSTRAINT notifications_type_check CHECK (type IN (
    'dataset_ready', 'dataset_invalid', 'job_queued', 'job_started', 'job_completed', 'job_failed',
    'job_cancelled', 'artifact_ready', 'budget_warning', 'budget_exceeded'));
