-- Everything the instances own, in one statement; returns the counts.
-- params: p_ids text[]
WITH h AS (DELETE FROM {{schema}}.history h WHERE h.instance_id = ANY (p_ids) RETURNING 1),
     e AS (DELETE FROM {{schema}}.executions e WHERE e.instance_id = ANY (p_ids) RETURNING 1),
     q AS (DELETE FROM {{schema}}.orchestrator_queue q WHERE q.instance_id = ANY (p_ids) RETURNING 1),
     w AS (DELETE FROM {{schema}}.worker_queue w WHERE w.instance_id = ANY (p_ids) RETURNING 1),
     l AS (DELETE FROM {{schema}}.instance_locks l WHERE l.instance_id = ANY (p_ids)),
     s AS (DELETE FROM {{schema}}.kv_store s WHERE s.instance_id = ANY (p_ids)),
     d AS (DELETE FROM {{schema}}.kv_delta d WHERE d.instance_id = ANY (p_ids)),
     c AS (DELETE FROM {{schema}}.instance_claims c WHERE c.instance_id = ANY (p_ids)),
     i AS (DELETE FROM {{schema}}.instances i WHERE i.instance_id = ANY (p_ids))
SELECT (SELECT pg_catalog.count(*) FROM e) AS executions_deleted,
       (SELECT pg_catalog.count(*) FROM h) AS events_deleted,
       (SELECT pg_catalog.count(*) FROM q) + (SELECT pg_catalog.count(*) FROM w) AS queue_messages_deleted;
