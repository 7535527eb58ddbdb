-- Take the item's session for the owner, from v_start for
-- p_session_lock_ms, unless another live owner holds it. One row when taken.
-- params: v_session text, p_owner_id text, v_start bigint, p_session_lock_ms bigint, v_now bigint
INSERT INTO {{schema}}.sessions AS s (session_id, owner_id, locked_until_ms, last_activity_at_ms)
VALUES (v_session, p_owner_id, v_start + p_session_lock_ms, v_now)
ON CONFLICT ON CONSTRAINT sessions_pkey DO UPDATE
   SET owner_id = EXCLUDED.owner_id,
       locked_until_ms = EXCLUDED.locked_until_ms,
       last_activity_at_ms = EXCLUDED.last_activity_at_ms
 WHERE s.locked_until_ms <= v_now OR s.owner_id = EXCLUDED.owner_id
RETURNING true AS taken;
