//! The install script of a schema, for DBAs who apply DDL by hand.

use crate::config::SqlMode;
use crate::migrate;
use crate::schema::SchemaName;

const BEGIN: &str = include_str!("../../tenants/script_begin.sql");
const RECORD_MIGRATION: &str = include_str!("../../tenants/script_record_migration.sql");
const END: &str = include_str!("../../tenants/script_end.sql");

/// The SQL a starting provider would run on `schema`, as one script: the
/// bookkeeping tables, each migration after `after_version` (all of them for
/// `None`, the usual case of a new schema) recorded with its checksum and,
/// for [`SqlMode::StoredProcedures`], every procedure (old overloads dropped
/// first) recorded likewise, with `EXECUTE` revoked from `PUBLIC` and kept
/// for the roles that held it before (see [`grant_runtime_role`](super::grant_runtime_role)).
/// After a version, the tables the migrations create go to the inline
/// runtime roles as [`migrate`](crate::migrate::migrate) gives them (`SELECT`,
/// `INSERT`, `UPDATE`, `DELETE` to each role other than the owner holding
/// all four on `instances`). Every `{{schema}}` is substituted.
///
/// The script is one transaction that takes the schema's DDL lock as a
/// provider does. Once it has run, providers find the schema current and
/// apply nothing (they can run with
/// [`MigrationMode::Verify`](crate::MigrationMode::Verify) and a role that
/// may not create objects). `after_version` must be the schema's applied
/// version: a migration already recorded fails the script, which then
/// changes nothing.
pub fn install_script(schema: &SchemaName, mode: SqlMode, after_version: Option<i64>) -> String {
    let migrations: Vec<migrate::Migration> = migrate::migrations()
        .into_iter()
        .filter(|m| after_version.is_none_or(|after| m.version > after))
        .collect();
    let procedures = match mode {
        SqlMode::StoredProcedures => migrate::procedures(),
        SqlMode::InlineSql => Vec::new(),
    };
    let contents = format!(
        "{} migration(s){}, {} stored procedure(s)",
        migrations.len(),
        migrations
            .first()
            .zip(migrations.last())
            .map(|(first, last)| format!(" ({} to {})", first.name, last.name))
            .unwrap_or_default(),
        procedures.len()
    );
    let mut out = schema.render(
        &BEGIN
            .replace("{{crate_version}}", env!("CARGO_PKG_VERSION"))
            .replace("{{contents}}", &contents),
    );
    push(&mut out, &schema.render(migrate::BOOKKEEPING));
    push(&mut out, &schema.render(migrate::LOCK));
    push(&mut out, &schema.render(migrate::BOOKKEEPING_UPGRADE));
    for migration in &migrations {
        out.push_str(&format!("\n-- migration {}\n", migration.name));
        push(&mut out, &schema.render(migration.template()));
        push(
            &mut out,
            &schema.render(
                &RECORD_MIGRATION
                    .replace("{{version}}", &migration.version.to_string())
                    .replace("{{name}}", migration.name)
                    .replace("{{checksum}}", &migration.checksum_hex()),
            ),
        );
    }
    // An upgrade (`after_version` given) that creates tables gives them to
    // the inline runtime roles, as `migrate` does; a new schema has none.
    if let Some(grant) = migrate::grant_new_tables(&migrations).filter(|_| after_version.is_some())
    {
        out.push('\n');
        push(&mut out, &schema.render(&grant));
    }
    if !procedures.is_empty() {
        // The functions' names in the schema, and the procedures' names as
        // recorded: the script drops what a provider's migration would
        // (every procedure it installs, and those recorded but retired).
        let names: Vec<String> = procedures
            .iter()
            .map(|p| format!("'{}{{{{suffix}}}}'", p.name))
            .collect();
        let embedded: Vec<String> = procedures.iter().map(|p| format!("'{}'", p.name)).collect();
        out.push('\n');
        push(&mut out, &schema.render(migrate::SAVE_GRANTS));
        push(
            &mut out,
            &schema.render(
                &migrate::DROP_FUNCTIONS
                    .replace("{{names}}", &names.join(", "))
                    .replace("{{embedded}}", &embedded.join(", ")),
            ),
        );
        push(&mut out, migrate::INSTALL_SETTINGS);
        for procedure in &procedures {
            out.push_str(&format!("\n-- procedure {}\n", procedure.name));
            push(&mut out, &schema.render(procedure.template()));
        }
        out.push('\n');
        push(
            &mut out,
            &schema.render(&migrate::record_procedures(&procedures)),
        );
        push(
            &mut out,
            &schema.render(&migrate::GRANT_INSTALLED.replace("{{names}}", &names.join(", "))),
        );
    }
    out.push('\n');
    push(&mut out, END);
    out
}

/// Appends `sql`, ending it with a `;` and a newline if it has none.
fn push(out: &mut String, sql: &str) {
    let sql = sql.trim_end();
    out.push_str(sql);
    if !sql.ends_with(';') {
        out.push(';');
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_names_the_schema_and_no_marker() {
        let schema = SchemaName::new("Tenant_X").unwrap_or_else(|e| panic!("{e}"));
        let script = install_script(&schema, SqlMode::StoredProcedures, None);
        assert!(!script.contains("{{"), "a marker was left unsubstituted");
        assert!(script.starts_with("-- Install script"));
        assert!(script.contains("\"Tenant_X\".instances"));
        assert!(script.contains("LOCK TABLE \"Tenant_X\"._duroxide_migrations"));
        assert!(script.trim_end().ends_with("COMMIT;"));
        // EXECUTE revoked from PUBLIC on the functions installed, named one
        // by one (never the schema-wide form, which reads all of pg_proc).
        assert!(script.contains("EXECUTE 'REVOKE ALL ON FUNCTION ' || targets || ' FROM PUBLIC'"));
        assert!(!script.contains("ALL FUNCTIONS IN SCHEMA \"Tenant_X\""));
        assert!(script.contains("SET LOCAL check_function_bodies = off;"));
        for procedure in migrate::procedures() {
            assert!(script.contains(&format!("-- procedure {}\n", procedure.name)));
            assert!(script.contains(&format!(
                "CREATE OR REPLACE FUNCTION \"Tenant_X\".{}(",
                schema.procedure_name(procedure.name)
            )));
        }
        let tables_only = install_script(&schema, SqlMode::InlineSql, Some(1));
        assert!(!tables_only.contains("CREATE OR REPLACE FUNCTION"));
        assert!(!tables_only.contains("-- migration 0001_initial"));
        assert!(tables_only.contains("-- migration 0002_parked_orphans"));
    }

    #[test]
    fn an_upgrade_script_extends_the_inline_roles_rights_to_its_new_tables() {
        let schema = SchemaName::new("Tenant_X").unwrap_or_else(|e| panic!("{e}"));
        let grant = "-- grant_new_tables:";
        let upgrade = install_script(&schema, SqlMode::InlineSql, Some(5));
        assert!(upgrade.contains(grant), "{upgrade}");
        assert!(upgrade.contains("ON TABLE \"Tenant_X\".events_without_execution TO "));
        let older = install_script(&schema, SqlMode::StoredProcedures, Some(2));
        assert!(older.contains(
            "ON TABLE \"Tenant_X\".instance_claims, \"Tenant_X\".events_without_execution TO "
        ));
        // Granted after the migrations that create the tables.
        let at = |text: &str| older.find(text).unwrap_or(usize::MAX);
        assert!(at("-- migration 0006_event_counts") < at(grant));
        assert!(at(grant) < at("-- procedure "));
        // A new schema has no role to extend; no new table, nothing to grant.
        for none in [
            install_script(&schema, SqlMode::InlineSql, None),
            install_script(&schema, SqlMode::InlineSql, Some(6)),
            install_script(&schema, SqlMode::StoredProcedures, None),
        ] {
            assert!(!none.contains(grant));
        }
    }
}
