-- Events queued for an instance that never started are dropped, with the
-- lease.
-- params: v_token text
WITH dropped AS (DELETE FROM {{schema}}.orchestrator_queue q WHERE q.lock_token = v_token)
DELETE FROM {{schema}}.instance_locks l WHERE l.lock_token = v_token;
