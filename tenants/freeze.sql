-- freeze: inside a tenant's drop, stops every fetch, ack and renewal of the
-- schema until the transaction ends (after waiting for those in flight), so
-- the lease check that follows stays true until the schema is gone.
LOCK TABLE {{schema}}.instance_locks, {{schema}}.orchestrator_queue, {{schema}}.worker_queue
    IN ACCESS EXCLUSIVE MODE
