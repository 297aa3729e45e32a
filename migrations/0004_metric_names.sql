-- One name per quantity from the worker contract to the page: the curve's columns take the
-- contract's names (`train_loss`, `eval_loss`), as the events and the API already do.
ALTER TABLE metrics_points RENAME COLUMN training_loss TO train_loss;
ALTER TABLE metrics_points RENAME COLUMN validation_loss TO eval_loss;
