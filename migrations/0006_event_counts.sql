-- 0006_event_counts: history events counted as they are written.
--
-- get_system_metrics reports the tenant's total history events, and
-- duroxide's runtime calls it at every start, before its dispatchers run
-- (and at every gauge poll with observability on). Counting the history
-- table read every event the tenant kept: on 2,000,000 events about 0.2 s
-- of a start, seconds on ten times that. Each execution now carries the
-- number of events appended to it while its row existed (event_count,
-- written by the statement that appends them), and events_without_execution
-- counts the events appended to an execution that had no row (only
-- append_with_execution can do that). The statements that delete history
-- delete the executions with it and take those events off the count there.
-- So count(history) = sum(executions.event_count) + sum(events_without_execution.events),
-- and the metrics read the executions, which they read anyway.
--
-- Adding the column writes no row (a constant default); the counts of the
-- existing history are filled in here, in the migration's transaction,
-- with one read of the history (about a second per million events).
ALTER TABLE {{schema}}.executions ADD COLUMN event_count bigint NOT NULL DEFAULT 0;

-- Rows of events appended to (positive) or deleted from (negative)
-- executions that had no row; the number is their sum, 0 with no row. A
-- new tenant has none, and the provider writes one only for such an
-- append or its deletion, so no row is shared by its statements.
CREATE TABLE {{schema}}.events_without_execution (
    events  bigint  NOT NULL
);

-- The counts of the history already there, with one read of it: each
-- execution's own, and what no execution's row took.
WITH counts AS (
    SELECT h.instance_id, h.execution_id, pg_catalog.count(*) AS events
      FROM {{schema}}.history h
     GROUP BY h.instance_id, h.execution_id),
counted AS (
    UPDATE {{schema}}.executions e
       SET event_count = c.events
      FROM counts c
     WHERE e.instance_id = c.instance_id AND e.execution_id = c.execution_id
    RETURNING e.event_count)
INSERT INTO {{schema}}.events_without_execution (events)
SELECT t.events
  FROM (SELECT (SELECT coalesce(pg_catalog.sum(c.events), 0) FROM counts c)
             - (SELECT coalesce(pg_catalog.sum(k.event_count), 0) FROM counted k) AS events) t
 WHERE t.events <> 0;
