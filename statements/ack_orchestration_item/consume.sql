-- The messages the turn consumed.
-- Found by their instance (orchestrator_queue_instance_idx), then by token:
-- the queue has no index on lock_token, so a claim's stamp can update a
-- message in place (migrations/0004_queue_stamps_in_place.sql).
-- params: p_lock_token text, v_instance text
DELETE FROM {{schema}}.orchestrator_queue q
 WHERE q.instance_id = v_instance AND q.lock_token = p_lock_token;
