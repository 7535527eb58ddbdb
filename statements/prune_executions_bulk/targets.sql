-- Instances matching the filter (p_ids, p_completed_before on the current
-- execution: NULL matches any) that have an execution the options would
-- prune (prune_executions/prune.sql: not the current one, not Running,
-- outside the p_keep_last most recent, completed before
-- p_prune_completed_before; NULL: any), oldest first, at most p_limit, as
-- an array. Instances with nothing to prune are passed over, so that
-- repeated bulk prunes get past them (and do not lock them). Each
-- candidate's executions are read by their key.
-- params: p_ids text[], p_completed_before bigint, p_limit bigint, p_keep_last bigint, p_prune_completed_before bigint
SELECT coalesce(pg_catalog.array_agg(t.instance_id), '{}') AS targets
  FROM (SELECT i.instance_id
          FROM {{schema}}.instances i
          LEFT JOIN {{schema}}.executions e
            ON e.instance_id = i.instance_id AND e.execution_id = i.current_execution_id
         WHERE (p_ids IS NULL OR i.instance_id = ANY (p_ids))
           AND (p_completed_before IS NULL OR e.completed_at_ms < p_completed_before)
           AND EXISTS (
               SELECT 1 FROM {{schema}}.executions x
                WHERE x.instance_id = i.instance_id
                  AND x.execution_id <> i.current_execution_id
                  AND x.status <> 'Running'
                  AND (p_prune_completed_before IS NULL OR x.completed_at_ms < p_prune_completed_before)
                  AND (p_keep_last IS NULL OR x.execution_id NOT IN (
                       SELECT k.execution_id FROM {{schema}}.executions k
                        WHERE k.instance_id = i.instance_id
                        ORDER BY k.execution_id DESC
                        LIMIT p_keep_last)))
         ORDER BY i.created_at_ms, i.instance_id
         LIMIT p_limit) t;
