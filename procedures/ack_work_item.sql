-- ack_work_item: remove a completed activity and, when given, enqueue its
-- completion for the orchestration, atomically. A token whose lock is gone
-- (cancelled, stolen, or expired) returns false and nothing changes (the
-- caller reports DX001). The item's
-- session, if any, records the activity. Returns whether the token was
-- found and what to wake: an enqueued completion wakes the schema's
-- orchestrator waiters (the caller does, after the commit); 'orchestrator
-- settle' says more completions of the instance are on their way.
-- The instance's claim row (instance_claims) is share-locked (created and
-- locked when missing while the activity is there: not for an instance
-- deleted before or meanwhile, whose ack fails and so writes nothing)
-- before any other row lock (`n` reads `claim`, which reads `shared`,
-- before the delete locks a row) and held until commit, so
-- an ack of the instance committing meanwhile sees the completion or wakes
-- for it (see ack_orchestration_item.sql). A share lock lets the
-- completions of sibling activities commit together instead of one after
-- the other.
--
-- It waits at most a second for a lock (lock_timeout; 55P03), and the
-- provider retries it off the connection until the lock is gone
-- (docs/architecture.md, "Fetch admission on a shared pool").
CREATE OR REPLACE FUNCTION {{schema}}.ack_work_item{{suffix}}(
    p_lock_token    text,
    p_instance_id   text,
    p_item_kind     text,
    p_work_item     text)
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
    {{> ack}};
END
$$;
