-- Release the lease and say what to wake after the commit: orchestrators
-- when v_wake_orchestrators (messages enqueued, or a writer of the
-- instance's queue in flight) or messages arrived while the instance was
-- leased, workers when v_wake_workers (activities enqueued).
-- params: p_lock_token text, v_instance text, v_wake_orchestrators boolean, v_wake_workers boolean
WITH released AS (DELETE FROM {{schema}}.instance_locks l WHERE l.lock_token = p_lock_token)
SELECT ARRAY(SELECT w.payload
               FROM (VALUES (1, 'orchestrator'::text,
                             v_wake_orchestrators
                             OR EXISTS (SELECT 1 FROM {{schema}}.orchestrator_queue q
                                         WHERE q.instance_id = v_instance)),
                            (2, 'worker'::text, v_wake_workers)) AS w(n, payload, wanted)
              WHERE w.wanted
              ORDER BY w.n) AS wake;
