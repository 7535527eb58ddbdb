-- 0006_event_counts: history events counted as they are written.
--
-- get_system_metrics reports the tenant's total history events, and
-- duroxide's runtime calls it at every start, before its dispatchers run
-- (and at every gauge poll with observability on). Counting the history
-- table read every event the tenant kept: on 2,000,000 events about 0.2 s
-- of a start, seconds on ten times that. Each execution now carries the
-- number of events appended to it while its row existed (event_count,
-- written by the statement that appends them), and one row here counts
-- the events appended to an execution that had no row (only
-- append_with_execution can do that). The statements that delete history
-- delete the executions with it and take those events off the count here.
-- So count(history) = sum(executions.event_count) + events_without_execution.events,
-- and the metrics read the executions, which they read anyway.
--
-- Adding the column writes no row (a constant default); the counts of the
-- existing history are filled in here, in the migration's transaction,
-- with one read of the history (about a second per million events).
ALTER TABLE {{schema}}.executions ADD COLUMN event_count bigint NOT NULL DEFAULT 0;

CREATE TABLE {{schema}}.events_without_execution (
    events  bigint  NOT NULL
);

UPDATE {{schema}}.executions e
   SET event_count = c.events
  FROM (SELECT h.instance_id, h.execution_id, pg_catalog.count(*) AS events
          FROM {{schema}}.history h
         GROUP BY h.instance_id, h.execution_id) c
 WHERE e.instance_id = c.instance_id AND e.execution_id = c.execution_id;

INSERT INTO {{schema}}.events_without_execution (events)
SELECT (SELECT pg_catalog.count(*) FROM {{schema}}.history)
     - (SELECT coalesce(pg_catalog.sum(e.event_count), 0) FROM {{schema}}.executions e);
