-- Notification priorities as the original spelled them: low | medium | high.
ALTER TABLE notifications DROP CONSTRAINT notifications_priority_check;
UPDATE notifications SET priority = 'medium' WHERE priority = 'normal';
ALTER TABLE notifications
    ALTER COLUMN priority SET DEFAULT 'medium',
    ADD CONSTRAINT notifications_priority_check CHECK (priority IN ('low', 'medium', 'high'));
