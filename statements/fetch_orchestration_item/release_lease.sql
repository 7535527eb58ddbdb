-- The batch was consumed since the candidate was read: give the lease back.
-- params: v_token text
DELETE FROM {{schema}}.instance_locks l WHERE l.lock_token = v_token;
