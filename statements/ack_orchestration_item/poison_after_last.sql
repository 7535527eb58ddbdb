-- duroxide's runtime fails an instance whose history it could not be given
-- (history_error) by acking one OrchestrationFailed at a fixed event id,
-- 99,999: it cannot know the history's last id. When the execution's
-- history already holds that id or a later one (a long-lived
-- orchestration), that insert would break the primary key, the ack would
-- fail every time and the instance would never end; the event goes after
-- the history's last one instead, its stored id changed to match. Otherwise
-- the arrays come back as they were. Run only for that ack (one
-- OrchestrationFailed at 99,999 with the status Failed). The arrays are
-- subscripted in parentheses: inline mode binds them as `$n::type[]`.
-- params: v_instance text, p_execution_id bigint, p_event_ids bigint[], p_event_data text[]
SELECT CASE WHEN n.id IS NULL THEN p_event_ids ELSE ARRAY[n.id] END AS event_ids,
       CASE WHEN n.id IS NULL THEN p_event_data
            ELSE ARRAY[pg_catalog.jsonb_set((p_event_data)[1]::jsonb, ARRAY['event_id'], pg_catalog.to_jsonb(n.id))::text]
       END AS event_data
  FROM (SELECT pg_catalog.max(h.event_id) + 1 AS id
          FROM {{schema}}.history h
         WHERE h.instance_id = v_instance AND h.execution_id = p_execution_id
           AND h.event_id >= (p_event_ids)[1]) n
