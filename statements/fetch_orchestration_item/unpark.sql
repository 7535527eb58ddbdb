-- Parked messages of an instance that can now run are ordinary messages
-- again (visible now, should the turn be abandoned), those the batch left
-- out (over p_max_batch_bytes) too: they come in its next turns.
-- params: v_now bigint, v_instance text
UPDATE {{schema}}.orchestrator_queue q
   SET orphan_since_ms = NULL, visible_at_ms = least(q.visible_at_ms, v_now)
 WHERE q.instance_id = v_instance AND q.orphan_since_ms IS NOT NULL;
