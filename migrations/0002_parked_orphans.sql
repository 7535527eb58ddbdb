-- 0002_parked_orphans: messages for instances that have not started.
--
-- A batch of messages whose instance has no row, no started history and no
-- start message among them cannot run yet. Instead of going back to the head
-- of the queue (where it would be met again by every fetch), it is parked:
-- orphan_since_ms records when it was first found so, and visible_at_ms
-- moves to the end of the retention period. A fetch that claims the instance
-- (its start message arrived) takes its parked messages too, whatever their
-- visibility; a parked message still orphaned when its retention ends is
-- dropped (procedures/fetch_orchestration_item.sql).
ALTER TABLE {{schema}}.orchestrator_queue ADD COLUMN orphan_since_ms bigint;
CREATE INDEX orchestrator_queue_orphan_idx ON {{schema}}.orchestrator_queue (orphan_since_ms, instance_id)
    WHERE orphan_since_ms IS NOT NULL;
