-- fetch_lock_timeout: inline mode's fetches (src/inline/orchestration.rs,
-- src/inline/worker.rs) send this with their transaction's BEGIN, in the
-- same round trip (crate::pooler::Db::fetch_begin): they wait at most a
-- second for a lock, as procedures/fetch_orchestration_item.sql and
-- procedures/fetch_work_item.sql pin lock_timeout.
SET LOCAL lock_timeout = '1s'
