-- recorded_procedures: the names _duroxide_procedures records (procedures
-- this or an earlier build installed).
SELECT d.name
  FROM {{schema}}._duroxide_procedures d
 ORDER BY d.name
