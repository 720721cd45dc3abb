-- migrate:up

-- Indexes for pruning: delivered batches by age, split batches by their halves,
-- and finished job runs by age.
CREATE INDEX outbox_delivered ON outbox_batches (delivered_at)
    WHERE status = 'delivered';
CREATE INDEX outbox_parent ON outbox_batches (parent_id)
    WHERE parent_id IS NOT NULL;
CREATE INDEX job_runs_finished ON job_runs (finished_at)
    WHERE status <> 'running';

-- migrate:down

DROP INDEX job_runs_finished;
DROP INDEX outbox_parent;
DROP INDEX outbox_delivered;
