-- Everything the instances own, in one statement; returns the counts.
-- History the executions' rows did not count (appended while a row was
-- missing) comes off events_without_execution (0006_event_counts.sql).
-- params: p_ids text[]
WITH h AS (DELETE FROM {{schema}}.history h WHERE h.instance_id = ANY (p_ids) RETURNING 1),
     e AS (DELETE FROM {{schema}}.executions e WHERE e.instance_id = ANY (p_ids) RETURNING e.event_count),
     q AS (DELETE FROM {{schema}}.orchestrator_queue q WHERE q.instance_id = ANY (p_ids) RETURNING 1),
     w AS (DELETE FROM {{schema}}.worker_queue w WHERE w.instance_id = ANY (p_ids) RETURNING 1),
     l AS (DELETE FROM {{schema}}.instance_locks l WHERE l.instance_id = ANY (p_ids)),
     s AS (DELETE FROM {{schema}}.kv_store s WHERE s.instance_id = ANY (p_ids)),
     d AS (DELETE FROM {{schema}}.kv_delta d WHERE d.instance_id = ANY (p_ids)),
     c AS (DELETE FROM {{schema}}.instance_claims c WHERE c.instance_id = ANY (p_ids)),
     i AS (DELETE FROM {{schema}}.instances i WHERE i.instance_id = ANY (p_ids)),
     u AS (SELECT (SELECT pg_catalog.count(*) FROM h)
                - (SELECT coalesce(pg_catalog.sum(e.event_count), 0) FROM e) AS events),
     r AS (INSERT INTO {{schema}}.events_without_execution (events)
           SELECT -u.events FROM u WHERE u.events <> 0)
SELECT (SELECT pg_catalog.count(*) FROM e) AS executions_deleted,
       (SELECT pg_catalog.count(*) FROM h) AS events_deleted,
       (SELECT pg_catalog.count(*) FROM q) + (SELECT pg_catalog.count(*) FROM w) AS queue_messages_deleted;
