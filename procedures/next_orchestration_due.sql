-- next_orchestration_due: milliseconds until the orchestrator queue may next
-- have work without anyone enqueueing it: the earliest delayed message
-- (timer, delayed abandon) or the earliest live instance lease to expire.
-- NULL when there is neither. A long-polling fetch that found nothing sleeps
-- until then at most.
CREATE OR REPLACE FUNCTION {{schema}}.next_orchestration_due()
RETURNS SETOF bigint
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY
    SELECT least(
             (SELECT min(q.visible_at_ms) FROM {{schema}}.orchestrator_queue q
               WHERE q.visible_at_ms > n.now_ms),
             (SELECT min(l.locked_until_ms) FROM {{schema}}.instance_locks l
               WHERE l.locked_until_ms > n.now_ms)) - n.now_ms
      FROM (SELECT {{now_ms}} AS now_ms) n;
END
$$;
