-- 0001_initial: the tables every provider operation works on.
--
-- Conventions:
--   * {{schema}} is replaced by the tenant's quoted schema name.
--   * Times are bigint milliseconds since the Unix epoch, taken from the
--     database clock (see procedures/_now_ms.sql), except TimerFired
--     visibility, which is the runtime's fire_at_ms.
--   * Serialized events and work items are stored as text, byte for byte as
--     duroxide's serde_json produced them (corrupt rows must stay corrupt so
--     the runtime's poison handling can see them).

-- One row per orchestration instance, created by the first ack.
CREATE TABLE {{schema}}.instances (
    instance_id            text   PRIMARY KEY,
    orchestration_name     text   NOT NULL,
    orchestration_version  text,
    current_execution_id   bigint NOT NULL DEFAULT 1,
    parent_instance_id     text,
    custom_status          text,
    custom_status_version  bigint NOT NULL DEFAULT 0,
    created_at_ms          bigint NOT NULL,
    updated_at_ms          bigint NOT NULL
);
CREATE INDEX instances_parent_idx ON {{schema}}.instances (parent_instance_id)
    WHERE parent_instance_id IS NOT NULL;
CREATE INDEX instances_created_idx ON {{schema}}.instances (created_at_ms DESC);

-- One row per execution (ContinueAsNew starts a new one).
CREATE TABLE {{schema}}.executions (
    instance_id      text   NOT NULL,
    execution_id     bigint NOT NULL,
    status           text   NOT NULL DEFAULT 'Running',
    output           text,
    -- duroxide version pinned by the execution's OrchestrationStarted (capability filtering).
    pinned_major     bigint,
    pinned_minor     bigint,
    pinned_patch     bigint,
    started_at_ms    bigint NOT NULL,
    completed_at_ms  bigint,
    PRIMARY KEY (instance_id, execution_id)
);

-- Append-only event log, per execution.
CREATE TABLE {{schema}}.history (
    instance_id    text   NOT NULL,
    execution_id   bigint NOT NULL,
    event_id       bigint NOT NULL,
    event_type     text   NOT NULL,
    event_data     text   NOT NULL,
    created_at_ms  bigint NOT NULL,
    PRIMARY KEY (instance_id, execution_id, event_id)
);

-- Orchestrator queue: peek-lock messages, batched per instance.
CREATE TABLE {{schema}}.orchestrator_queue (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    instance_id      text    NOT NULL,
    -- WorkItem variant name (StartOrchestration, QueueMessage, ...), for SQL-side decisions.
    item_kind        text    NOT NULL,
    work_item        text    NOT NULL,
    visible_at_ms    bigint  NOT NULL,
    lock_token       text,
    locked_until_ms  bigint,
    attempt_count    integer NOT NULL DEFAULT 0 CHECK (attempt_count >= 0),
    created_at_ms    bigint  NOT NULL
);
CREATE INDEX orchestrator_queue_visible_idx  ON {{schema}}.orchestrator_queue (visible_at_ms, id);
CREATE INDEX orchestrator_queue_instance_idx ON {{schema}}.orchestrator_queue (instance_id, id);
CREATE INDEX orchestrator_queue_lock_idx     ON {{schema}}.orchestrator_queue (lock_token)
    WHERE lock_token IS NOT NULL;

-- Instance-level lease: at most one dispatcher works on an instance at a time.
CREATE TABLE {{schema}}.instance_locks (
    instance_id      text   PRIMARY KEY,
    lock_token       text   NOT NULL UNIQUE,
    locked_until_ms  bigint NOT NULL,
    locked_at_ms     bigint NOT NULL
);

-- Worker queue: one activity execution per row, peek-lock.
CREATE TABLE {{schema}}.worker_queue (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    work_item        text    NOT NULL,
    visible_at_ms    bigint  NOT NULL,
    lock_token       text,
    locked_until_ms  bigint,
    attempt_count    integer NOT NULL DEFAULT 0 CHECK (attempt_count >= 0),
    -- Identity of the activity (for cancellation), routing session and tag.
    instance_id      text,
    execution_id     bigint,
    activity_id      bigint,
    session_id       text,
    tag              text,
    created_at_ms    bigint  NOT NULL
);
CREATE INDEX worker_queue_visible_idx  ON {{schema}}.worker_queue (visible_at_ms, id);
CREATE INDEX worker_queue_lock_idx     ON {{schema}}.worker_queue (lock_token) WHERE lock_token IS NOT NULL;
CREATE INDEX worker_queue_activity_idx ON {{schema}}.worker_queue (instance_id, execution_id, activity_id);
CREATE INDEX worker_queue_session_idx  ON {{schema}}.worker_queue (session_id) WHERE session_id IS NOT NULL;

-- Session affinity: which worker owns a session, and until when.
CREATE TABLE {{schema}}.sessions (
    session_id           text   PRIMARY KEY,
    owner_id             text   NOT NULL,
    locked_until_ms      bigint NOT NULL,
    last_activity_at_ms  bigint NOT NULL
);

-- KV store merged from completed executions.
CREATE TABLE {{schema}}.kv_store (
    instance_id         text   NOT NULL,
    key                 text   NOT NULL,
    value               text   NOT NULL,
    last_updated_at_ms  bigint NOT NULL,
    PRIMARY KEY (instance_id, key)
);

-- KV mutations of the current execution; NULL value = tombstone.
CREATE TABLE {{schema}}.kv_delta (
    instance_id         text   NOT NULL,
    key                 text   NOT NULL,
    value               text,
    last_updated_at_ms  bigint NOT NULL,
    PRIMARY KEY (instance_id, key)
);
