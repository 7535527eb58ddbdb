-- forget_procedures: clears the record of installed procedures, so a later
-- start in stored-procedure mode installs them all afresh.
DELETE FROM {{schema}}._duroxide_procedures
