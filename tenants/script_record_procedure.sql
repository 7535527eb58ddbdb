INSERT INTO {{schema}}._duroxide_procedures (name, checksum)
VALUES ('{{name}}', pg_catalog.decode('{{checksum}}', 'hex'));
