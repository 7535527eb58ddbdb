INSERT INTO {{schema}}._duroxide_procedures (name, checksum)
VALUES ('{{name}}', decode('{{checksum}}', 'hex'));
