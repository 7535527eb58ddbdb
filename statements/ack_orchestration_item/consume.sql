-- The messages the turn consumed.
-- params: p_lock_token text
DELETE FROM {{schema}}.orchestrator_queue q WHERE q.lock_token = p_lock_token;
