-- Spending limits: an account's own monthly budget (NULL: the operator's default).
ALTER TABLE users ADD COLUMN monthly_budget numeric(12, 2) CHECK (monthly_budget >= 0);
-- Budget alerts are sent once per month and level: the month they were last sent for.
ALTER TABLE users ADD COLUMN budget_warned_month date, ADD COLUMN budget_exceeded_month date;
