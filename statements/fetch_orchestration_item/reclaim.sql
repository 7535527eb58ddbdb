-- A claim of one instance: its claim row, without waiting, and the clock.
-- For a candidate whose claim row was just created and, in inline mode, for
-- a fetch whose snapshot failed and rolled back.
-- params: v_instance text
SELECT coalesce((SELECT true FROM {{schema}}.instance_claims k
                  WHERE k.instance_id = v_instance FOR UPDATE SKIP LOCKED), false) AS claimed,
       {{now_ms}} AS now_ms;
