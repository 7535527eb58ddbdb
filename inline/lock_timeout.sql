-- lock_timeout: sent with the BEGIN of every inline transaction that must
-- not wait long for a lock, in the same round trip
-- (crate::pooler::Db::bounded_begin): the fetches (src/inline/orchestration.rs,
-- src/inline/worker.rs), the operations on a lease already held (the
-- orchestration ack's transaction, an activity's ack with the claim of its
-- task's next activity, and the single statements of acks, abandons and
-- renewals), and the single statements of enqueues, appends and reads
-- (crate::pooler::Bounded). They wait at most a second for a lock, as the
-- procedures they stand for pin lock_timeout.
SET LOCAL lock_timeout = '1s'
