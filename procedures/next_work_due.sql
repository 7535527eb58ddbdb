-- next_work_due: milliseconds until the worker queue may next have work
-- without anyone enqueueing it: the earliest delayed item (delayed abandon),
-- the earliest activity lock or session lock to expire. NULL when there is
-- none. A long-polling fetch that found nothing sleeps until then at most.
CREATE OR REPLACE FUNCTION {{schema}}.next_work_due()
RETURNS SETOF bigint
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY
    SELECT least(
             (SELECT min(q.visible_at_ms) FROM {{schema}}.worker_queue q
               WHERE q.visible_at_ms > n.now_ms),
             (SELECT min(q.locked_until_ms) FROM {{schema}}.worker_queue q
               WHERE q.lock_token IS NOT NULL AND q.locked_until_ms > n.now_ms),
             (SELECT min(s.locked_until_ms) FROM {{schema}}.sessions s
               WHERE s.locked_until_ms > n.now_ms)) - n.now_ms
      FROM (SELECT {{now_ms}} AS now_ms) n;
END
$$;
