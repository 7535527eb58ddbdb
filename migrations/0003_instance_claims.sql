-- 0003_instance_claims: instances are coordinated by row locks, not
-- advisory locks.
--
-- One row per instance whose orchestrator queue was ever written to: every
-- writer of the queue creates it (or finds it) and locks it, and it lives
-- until the instance is deleted. The fetch claims an instance by locking its
-- row FOR UPDATE SKIP LOCKED; the writers (enqueue, an activity's
-- completion, an ack for the instances it sends to) and deletes lock it
-- until they commit; an ack tries its own instance's row without waiting.
-- Row locks need privileges on the table, so a role without rights on the
-- schema cannot take them (advisory keys it could: issue 17). See
-- docs/architecture.md, "Lock order".
--
-- Safe on a populated schema: the rows of every instance with a queued
-- message or a lease are created here, in the migration's transaction.
CREATE TABLE {{schema}}.instance_claims (
    instance_id  text  PRIMARY KEY
);
INSERT INTO {{schema}}.instance_claims (instance_id)
SELECT q.instance_id FROM {{schema}}.orchestrator_queue q
 UNION
SELECT l.instance_id FROM {{schema}}.instance_locks l;
