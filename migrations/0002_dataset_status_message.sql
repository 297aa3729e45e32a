-- Why a dataset is not (yet) ready, in words a person can act on ("3 problems must be fixed",
-- "the upload was interrupted", "9 usable examples; at least 10 are needed").
ALTER TABLE datasets ADD COLUMN status_message text CHECK (length(status_message) <= 2000);
