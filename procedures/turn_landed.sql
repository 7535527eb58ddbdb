-- turn_landed: whether event p_event_id of an instance's execution is in
-- its history, of type p_event_type. Asked only after an ack of a turn
-- lost its connection on an earlier attempt (its commit may have reached
-- the server, its reply not the client) and then found its lock token
-- gone: the commit it cannot see released it. The turn's last event in
-- place means the turn is committed (by that attempt, or by a later
-- holder of the instance's lease replaying the turn), and the ack reports
-- success instead of an unknown token (src/lost_replies.rs).
--
-- It waits at most a second for a lock (lock_timeout; 55P03), and the
-- provider retries it off the connection until the lock is gone
-- (docs/architecture.md, "Fetch admission on a shared pool").
CREATE OR REPLACE FUNCTION {{schema}}.turn_landed{{suffix}}(
    p_instance_id  text,
    p_execution_id bigint,
    p_event_id     bigint,
    p_event_type   text)
RETURNS SETOF boolean
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET jit = off
SET lock_timeout = '1s'
AS $$
#variable_conflict use_column
BEGIN
RETURN QUERY
    SELECT EXISTS (SELECT 1 FROM {{schema}}.history h
                    WHERE h.instance_id = p_instance_id AND h.execution_id = p_execution_id
                      AND h.event_id = p_event_id AND h.event_type = p_event_type);
END
$$;
