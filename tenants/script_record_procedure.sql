INSERT INTO {{schema}}._duroxide_procedures (name, checksum, crate_version)
VALUES ('{{name}}', decode('{{checksum}}', 'hex'), '{{crate_version}}');
