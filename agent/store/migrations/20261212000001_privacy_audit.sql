-- migrate:up

-- The privacy settings each batch was built under (a fingerprint that contains no
-- key). A pending batch built under other settings is rebuilt before it is sent.
-- NULL: built before this column existed, when nothing was hidden.
ALTER TABLE outbox_batches ADD COLUMN privacy_policy text;

-- Every pseudonym the agent made, with what it stands for, so the customer can map
-- a pseudonym seen at MHQ back to its original. Written when a batch is built.
CREATE TABLE pseudonyms (
    pseudonym       text        PRIMARY KEY,
    kind            text        NOT NULL,
    original        text        NOT NULL,
    -- Which pseudonym key made it: an HMAC of a constant under the key.
    key_id          text        NOT NULL,
    first_seen      timestamptz NOT NULL DEFAULT now()
);

-- One row per HTTP request that carried a message to MHQ, written before the
-- request is sent and completed with the response.
CREATE TABLE audit_log (
    id                  bigserial   PRIMARY KEY,
    message_id          text        NOT NULL,
    type                text        NOT NULL,
    sent_at             timestamptz NOT NULL DEFAULT now(),
    url                 text        NOT NULL,
    provider            text,
    record_count        integer,
    counts              jsonb,
    plaintext_sha256    text        NOT NULL,
    ciphertext_sha256   text        NOT NULL,
    body_bytes          integer     NOT NULL,
    -- NULL while the request is in flight, or when no response came.
    status              integer,
    error               text,
    finished_at         timestamptz
);

CREATE INDEX audit_log_sent_at ON audit_log (sent_at);
CREATE INDEX audit_log_message ON audit_log (message_id);

-- migrate:down

DROP TABLE audit_log;
DROP TABLE pseudonyms;
ALTER TABLE outbox_batches DROP COLUMN privacy_policy;
