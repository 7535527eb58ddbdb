-- Parked messages of an instance that can now run are ordinary messages
-- again (visible now, should the turn be abandoned).
-- params: v_token text, v_now bigint, v_instance text
UPDATE {{schema}}.orchestrator_queue q
   SET orphan_since_ms = NULL, visible_at_ms = least(q.visible_at_ms, v_now)
 WHERE q.instance_id = v_instance AND q.lock_token = v_token
   AND q.orphan_since_ms IS NOT NULL;
