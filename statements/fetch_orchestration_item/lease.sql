-- Take the lease (or take over an expired one) until v_start +
-- p_lock_timeout_ms, taken at v_now (the claim time), unless a live lease
-- was committed since the candidate's snapshot: this statement's fresh
-- snapshot sees it and inserts nothing, instead of colliding on the lease
-- row (ON CONFLICT would lock it), so the lease holder's ack never waits on
-- this fetch. Returns the claim time; no row: another dispatcher holds it.
-- params: v_instance text, v_token text, v_start bigint, p_lock_timeout_ms bigint, v_now bigint
INSERT INTO {{schema}}.instance_locks AS l (instance_id, lock_token, locked_until_ms, locked_at_ms)
SELECT v_instance, v_token, v_start + p_lock_timeout_ms, v_now
 WHERE NOT EXISTS (SELECT 1 FROM {{schema}}.instance_locks x
                    WHERE x.instance_id = v_instance AND x.locked_until_ms > v_now)
ON CONFLICT ON CONSTRAINT instance_locks_pkey DO UPDATE
   SET lock_token = EXCLUDED.lock_token,
       locked_until_ms = EXCLUDED.locked_until_ms,
       locked_at_ms = EXCLUDED.locked_at_ms
 WHERE l.locked_until_ms <= EXCLUDED.locked_at_ms
RETURNING l.locked_at_ms;
