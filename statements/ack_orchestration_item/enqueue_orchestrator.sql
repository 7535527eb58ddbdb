-- Enqueue the turn's orchestrator messages, in order (visible at NULL: now).
-- A given visibility (a timer's fire time, read from the runtime's clock
-- when the turn ran) is never earlier than now: a timer already due is
-- simply visible now, and no message lands below the fetches' scan floor
-- (src/scan_floor.rs).
-- params: p_orch_instances text[], p_orch_kinds text[], p_orch_items text[], p_orch_visible_ms bigint[], v_now bigint
INSERT INTO {{schema}}.orchestrator_queue (instance_id, item_kind, work_item, visible_at_ms, created_at_ms)
SELECT u.instance_id, u.item_kind, u.work_item, greatest(u.visible_at_ms, v_now), v_now
  FROM ROWS FROM (pg_catalog.unnest(p_orch_instances), pg_catalog.unnest(p_orch_kinds), pg_catalog.unnest(p_orch_items), pg_catalog.unnest(p_orch_visible_ms))
       WITH ORDINALITY AS u(instance_id, item_kind, work_item, visible_at_ms, n)
 ORDER BY u.n;
