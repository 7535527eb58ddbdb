-- The claim row of a candidate that has none (its messages were written by
-- an older build or behind the provider's back); `reclaim` then claims it.
-- Waits only for another transaction creating the same row.
-- params: v_instance text
INSERT INTO {{schema}}.instance_claims AS k (instance_id) VALUES (v_instance)
ON CONFLICT (instance_id) DO NOTHING;
