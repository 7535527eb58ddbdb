-- abandon_orchestration_item: release a lease without committing the turn.
--
-- Returns false for an unknown token (the caller reports DX001). The messages become fetchable again, after p_delay_ms
-- when given; with p_ignore_attempt their attempt counts are decremented
-- (never below zero) so the abandoned fetch does not count toward poisoning.
-- Returns what to wake ('orchestrator' when released): the caller wakes
-- orchestrator waiters after the commit (to fetch, or to re-time their wait).
--
-- It waits at most a second for a lock (lock_timeout; 55P03), and the
-- provider retries it off the connection until the lock is gone
-- (docs/architecture.md, "Fetch admission on a shared pool").
CREATE OR REPLACE FUNCTION {{schema}}.abandon_orchestration_item{{suffix}}(
    p_lock_token     text,
    p_delay_ms       bigint,
    p_ignore_attempt boolean)
RETURNS TABLE (acked boolean, wake text[])
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET jit = off
SET lock_timeout = '1s'
SECURITY DEFINER
AS $$
BEGIN
    RETURN QUERY
    -- One clock reading for the whole batch: read per row, the messages of
    -- one abandoned batch could come due a millisecond apart and a later
    -- fetch at that boundary would split them over two turns.
    WITH n AS (SELECT {{now_ms}} AS now_ms),
    released AS (
        DELETE FROM {{schema}}.instance_locks l
         WHERE l.lock_token = p_lock_token
        RETURNING l.instance_id),
    reopened AS (
        UPDATE {{schema}}.orchestrator_queue q
           SET lock_token = NULL,
               locked_until_ms = NULL,
               attempt_count = CASE WHEN p_ignore_attempt THEN greatest(q.attempt_count - 1, 0) ELSE q.attempt_count END,
               visible_at_ms = CASE WHEN p_delay_ms IS NULL THEN q.visible_at_ms
                                    ELSE n.now_ms + p_delay_ms END
          FROM n
         -- The instance as a value (at most one lease has the token), so the
         -- messages are read through orchestrator_queue_instance_idx: the
         -- queue has no index on lock_token.
         WHERE q.instance_id = (SELECT r.instance_id FROM released r)
           AND q.lock_token = p_lock_token
        RETURNING 1)
    -- Commits with synchronous_commit off: an abandon lost to a crash is
    -- harmless, the lease then ends on its own (docs/architecture.md, "Durability").
    SELECT EXISTS (SELECT 1 FROM released),
           CASE WHEN EXISTS (SELECT 1 FROM released) THEN ARRAY['orchestrator']::text[] ELSE '{}'::text[] END
      FROM (SELECT pg_catalog.set_config('synchronous_commit', 'off', true)) lazy_commit;
END
$$;
