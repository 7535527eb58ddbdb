-- read_bound: after migrate's pin, in the operator's reads of a tenant's
-- queues (`status`, `status --all`), bounds the wait for a lock on its
-- tables to 2 s. A table another session holds exclusively (a VACUUM
-- FULL, a long migration's ALTER TABLE, a LOCK TABLE left open) then fails
-- that tenant's read instead of hanging it, and a read of many tenants
-- neither stops at it nor keeps holding the others' tables meanwhile
-- (their own migrations would queue behind it).
SET LOCAL lock_timeout = '2s';
