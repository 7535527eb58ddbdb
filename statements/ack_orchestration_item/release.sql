-- Release the lease and wake waiters at commit: orchestrators when
-- v_wake_orchestrators (messages enqueued, or a writer of the instance's
-- queue in flight) or messages arrived while the instance was leased,
-- workers when v_wake_workers (activities enqueued).
-- params: p_lock_token text, v_instance text, v_wake_orchestrators boolean, v_wake_workers boolean
WITH released AS (DELETE FROM {{schema}}.instance_locks l WHERE l.lock_token = p_lock_token)
SELECT (SELECT pg_catalog.count(*) FROM (SELECT pg_catalog.pg_notify('{{channel}}', 'orchestrator')
                               WHERE v_wake_orchestrators
                                  OR EXISTS (SELECT 1 FROM {{schema}}.orchestrator_queue q
                                              WHERE q.instance_id = v_instance)) o)
     + (SELECT pg_catalog.count(*) FROM (SELECT pg_catalog.pg_notify('{{channel}}', 'worker') WHERE v_wake_workers) w) AS notified;
