-- First in the transaction: plan its statements per call (the procedure
-- pins the same in its header), over the pool's generic plans: a generic
-- plan of the optional id filter cannot use the primary key, so pruning a
-- few named instances would read them all.
SET LOCAL plan_cache_mode = auto;
