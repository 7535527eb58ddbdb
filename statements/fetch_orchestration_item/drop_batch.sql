-- Events queued for an instance that never started are dropped, with the
-- lease.
-- Messages are found by their instance (orchestrator_queue_instance_idx),
-- then by token: the queue has no index on lock_token.
-- params: v_token text, v_instance text
WITH dropped AS (DELETE FROM {{schema}}.orchestrator_queue q
                  WHERE q.instance_id = v_instance AND q.lock_token = v_token)
DELETE FROM {{schema}}.instance_locks l WHERE l.lock_token = v_token;
