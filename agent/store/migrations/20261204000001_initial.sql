-- migrate:up

-- One row per record version held locally, keyed by provider, entity and record key.
-- record_key equals the record's id except where the provider's id is not unique
-- (a commit sha appears in several merge requests): then it is "<parent>/<id>".
CREATE TABLE records (
    provider        text        NOT NULL,
    entity          text        NOT NULL,
    record_key      text        NOT NULL,
    repository_key  text,
    parent_id       text,
    -- The provider's version marker (its updated_at), to skip unchanged sub-resources.
    source_version  text,
    payload         jsonb       NOT NULL,
    content_hash    bytea       NOT NULL,
    -- Hash of the version last placed in an outbox batch; NULL = never queued.
    queued_hash     bytea,
    -- The outbox batch that carries the queued version.
    queued_batch    uuid,
    change_seq      bigint      NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, entity, record_key)
);

CREATE SEQUENCE record_change_seq;

CREATE INDEX records_unqueued ON records (change_seq)
    WHERE queued_hash IS DISTINCT FROM content_hash;
CREATE INDEX records_repository ON records (provider, repository_key);
CREATE INDEX records_parent ON records (provider, entity, parent_id);

-- Where each stream of each repository continues on the next fetch.
CREATE TABLE bookmarks (
    provider        text        NOT NULL,
    repository_key  text        NOT NULL,
    stream          text        NOT NULL,
    value           text        NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, repository_key, stream)
);

-- Per configured repository: the outcome of its last fetch.
CREATE TABLE repository_state (
    provider        text        NOT NULL,
    repository_key  text        NOT NULL,
    last_fetch_at   timestamptz,
    last_success_at timestamptz,
    status          text        NOT NULL DEFAULT 'never',
    error_code      text,
    error_message   text,
    PRIMARY KEY (provider, repository_key)
);

-- Outbox: every message to MHQ is a batch with a fixed id (the webhook-id).
CREATE TABLE outbox_batches (
    id              uuid        PRIMARY KEY,
    seq             bigserial   UNIQUE,
    provider        text        NOT NULL,
    status          text        NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'delivered', 'rejected', 'split')),
    record_count    integer     NOT NULL,
    counts          jsonb       NOT NULL,
    -- The envelope's plaintext JSON, zlib-compressed; the same bytes on every retry.
    envelope        bytea       NOT NULL,
    parent_id       uuid        REFERENCES outbox_batches (id),
    -- Delivery order: a batch split after a 413 keeps its parent's place, with
    -- order_path '0' and '1' for the halves, so order survives the split.
    order_seq       bigint,
    order_path      text        NOT NULL DEFAULT '',
    attempts        integer     NOT NULL DEFAULT 0,
    last_attempt_at timestamptz,
    last_status     integer,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz
);

CREATE INDEX outbox_pending ON outbox_batches ((COALESCE(order_seq, seq)), order_path)
    WHERE status = 'pending';

CREATE TABLE job_runs (
    id              bigserial   PRIMARY KEY,
    job             text        NOT NULL,
    trigger         text        NOT NULL,
    started_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    status          text        NOT NULL DEFAULT 'running'
        CHECK (status IN ('running', 'ok', 'failed', 'interrupted')),
    summary         jsonb       NOT NULL DEFAULT '{}'::jsonb
);

CREATE INDEX job_runs_latest ON job_runs (job, started_at DESC);

-- Commands from MHQ, executed at most once each.
CREATE TABLE commands (
    id              text        PRIMARY KEY,
    command         text        NOT NULL,
    parameters      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    received_at     timestamptz NOT NULL DEFAULT now(),
    status          text        NOT NULL DEFAULT 'received'
        CHECK (status IN ('received', 'running', 'ok', 'failed', 'rejected')),
    finished_at     timestamptz,
    result          jsonb,
    reported_at     timestamptz
);

CREATE TABLE agent_meta (
    key             text        PRIMARY KEY,
    value           text        NOT NULL
);

-- migrate:down

DROP TABLE agent_meta;
DROP TABLE commands;
DROP TABLE job_runs;
DROP TABLE outbox_batches;
DROP TABLE repository_state;
DROP TABLE bookmarks;
DROP TABLE records;
DROP SEQUENCE record_change_seq;
