//! `duroxide-postgres`: run the tenants of a database from a shell.
//!
//! Migrate, verify and inspect tenant schemas, list queued items this build
//! cannot decode, drop a tenant, print a
//! schema's install script, uninstall its stored procedures (the rollback
//! to inline SQL), and grant or revoke a least-privilege runtime role. Everything goes through the library's
//! [`duroxide_postgres::tenants`] and [`duroxide_postgres::migrate`]; see
//! docs/cli.md.

mod exit;
mod report;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use duroxide_postgres::tenants::{self, Progress, TenantOutcome};
use duroxide_postgres::{PostgresOptions, SchemaName, SqlMode};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};

use exit::Failure;

/// Operate the duroxide-postgres tenant schemas of a PostgreSQL database.
#[derive(Parser)]
#[command(name = "duroxide-postgres", version, after_help = exit::HELP)]
struct Cli {
    /// PostgreSQL connection URL (postgres://user:password@host:port/database).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    database_url: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply pending migrations and, in procedure mode, install or update the
    /// stored procedures. --all means every existing tenant.
    Migrate {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        mode: ModeArg,
        /// Then drop the functions left under the procedures' plain names
        /// by builds before names unique per schema. Only once no process
        /// of such a build runs: they call those names.
        #[arg(long)]
        drop_legacy: bool,
    },
    /// Check, changing nothing, that schemas are ready for a SQL mode
    /// (exit code 5 when one is not).
    Verify {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        mode: ModeArg,
    },
    /// A table per tenant: version, pending migrations, procedures, queue
    /// depths, oldest visible message age, leases; then what holds back the
    /// cleanup of delivered messages in the whole database (the oldest
    /// snapshot), which slows every tenant's fetches while it lasts.
    Status {
        #[command(flatten)]
        target: Target,
    },
    /// List the queued items (orchestrator messages, activities) this
    /// build cannot decode: what a fetch sets aside, and what no release
    /// can read once every node runs the newest. Exit code 9 when any.
    Unreadable {
        #[command(flatten)]
        target: Target,
    },
    /// List or drop tenants.
    Tenants {
        #[command(subcommand)]
        command: TenantsCommand,
    },
    /// Print the install script of a schema (migrations and procedures with
    /// the schema substituted), for DBAs who apply DDL by hand. Needs no
    /// database.
    PrintSql {
        /// The tenant schema.
        #[arg(long)]
        schema: String,
        #[command(flatten)]
        mode: ModeArg,
        /// Leave out the migrations up to this version (the schema's applied
        /// version), for an upgrade script.
        #[arg(long, value_name = "VERSION")]
        after_version: Option<i64>,
    },
    /// Drop every stored procedure of a schema and their records: the
    /// rollback to inline SQL. Run the schema's processes with
    /// DUROXIDE_POSTGRES_SQL_MODE=inline.
    UninstallProcedures {
        /// The tenant schema.
        #[arg(long)]
        schema: String,
    },
    /// Give a runtime role exactly what a provider needs on a schema: USAGE
    /// and EXECUTE on its procedures (EXECUTE revoked from PUBLIC), or with
    /// --inline, USAGE and DML on its tables. Idempotent; run as the
    /// schema's owner.
    Grant {
        /// The tenant schema.
        #[arg(long)]
        schema: String,
        /// The runtime role.
        #[arg(long)]
        role: String,
        /// Grant what inline SQL needs (table DML) instead of EXECUTE.
        #[arg(long)]
        inline: bool,
    },
    /// Take from a role every right on a schema and the objects in it.
    Revoke {
        /// The tenant schema.
        #[arg(long)]
        schema: String,
        /// The role.
        #[arg(long)]
        role: String,
    },
}

#[derive(Subcommand)]
enum TenantsCommand {
    /// The tenant schemas of the database, with version and procedures.
    List,
    /// Drop a tenant's schema with all its tables, rows and functions.
    /// Refused while the tenant has live leases (a runtime is working on it)
    /// unless --force; its running providers must be stopped by their owners.
    Drop {
        /// The tenant schema.
        #[arg(long)]
        schema: String,
        /// Drop even with live leases, throwing the work in flight away.
        #[arg(long)]
        force: bool,
    },
}

/// Which schemas a command works on.
#[derive(Args)]
#[group(required = true, multiple = false)]
struct Target {
    /// A tenant schema (repeat the option for several).
    #[arg(long = "schema", value_name = "SCHEMA")]
    schemas: Vec<String>,
    /// Every tenant schema of the database.
    #[arg(long)]
    all: bool,
}

#[derive(Args)]
struct ModeArg {
    /// SQL mode: `procedures` (tables and stored procedures) or `inline`
    /// (tables only).
    #[arg(
        long = "sql-mode",
        value_name = "MODE",
        env = "DUROXIDE_POSTGRES_SQL_MODE",
        default_value = "procedures",
        value_parser = parse_mode
    )]
    sql_mode: SqlMode,
}

fn parse_mode(text: &str) -> Result<SqlMode, String> {
    text.parse::<SqlMode>().map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(&Failure::new(exit::FAILURE, format!("cannot start: {e}"))),
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => fail(&failure),
    }
}

fn fail(failure: &Failure) -> ExitCode {
    eprintln!("duroxide-postgres: error: {}", failure.message);
    ExitCode::from(failure.code)
}

/// Runs the command; `Ok` carries the exit code of a command that reported
/// its own failures (several schemas), `Err` a failure to print.
async fn run(cli: Cli) -> Result<u8, Failure> {
    let url = cli.database_url.as_deref();
    match cli.command {
        Command::PrintSql {
            schema,
            mode,
            after_version,
        } => {
            let schema = schema_name(&schema)?;
            print!(
                "{}",
                tenants::install_script(&schema, mode.sql_mode, after_version)
            );
            Ok(exit::OK)
        }
        Command::Migrate {
            target,
            mode,
            drop_legacy,
        } => {
            let pool = connect(url).await?;
            let schemas = resolve(&pool, &target).await?;
            let outcomes = tenants::migrate_many(&pool, &schemas, mode.sql_mode, |p| {
                progress(&p, |()| format!("current for {}", mode.sql_mode))
            })
            .await;
            let mut code = first_failure(&outcomes);
            if drop_legacy {
                for outcome in outcomes.iter().filter(|o| o.result.is_ok()) {
                    let schema = &outcome.schema;
                    match tenants::drop_legacy_procedures(&pool, schema).await {
                        Ok(n) => println!("{schema}: dropped {n} legacy procedure name(s)"),
                        Err(e) => {
                            eprintln!("duroxide-postgres: error: {schema}: {e}");
                            if code == exit::OK {
                                code = exit::code_of(&e);
                            }
                        }
                    }
                }
            }
            Ok(code)
        }
        Command::Verify { target, mode } => {
            let pool = connect(url).await?;
            let schemas = resolve(&pool, &target).await?;
            let outcomes = tenants::verify_many(&pool, &schemas, mode.sql_mode, |p| {
                progress(&p, |s| {
                    format!(
                        "ready for {} (version {})",
                        mode.sql_mode,
                        s.applied_version.unwrap_or(0)
                    )
                })
            })
            .await;
            Ok(first_failure(&outcomes))
        }
        Command::Status { target } => {
            let pool = connect(url).await?;
            let mut outcomes = Vec::new();
            if target.all {
                for outcome in tenants::status_all(&pool).await? {
                    outcomes.push((outcome.schema, outcome.result));
                }
                if outcomes.is_empty() {
                    eprintln!("duroxide-postgres: no tenant schema in this database");
                }
            } else {
                for schema in resolve(&pool, &target).await? {
                    let result = tenants::status(&pool, &schema).await;
                    outcomes.push((schema, result));
                }
            }
            let code = print_status(outcomes);
            let holder = tenants::cleanup_horizon(&pool).await?;
            println!();
            print!("{}", report::horizon_block(holder.as_ref()));
            Ok(code)
        }
        Command::Unreadable { target } => {
            let pool = connect(url).await?;
            let mut code = exit::OK;
            let mut found = false;
            for (i, schema) in resolve(&pool, &target).await?.into_iter().enumerate() {
                if i > 0 {
                    println!();
                }
                match tenants::unreadable(&pool, &schema).await {
                    Ok(items) => {
                        found |= !items.is_empty();
                        print!("{}", report::unreadable_table(&schema, &items));
                    }
                    Err(e) => {
                        println!("tenant {schema}\n  error: {e}");
                        eprintln!("duroxide-postgres: error: {schema}: {e}");
                        if code == exit::OK {
                            code = exit::code_of(&e);
                        }
                    }
                }
            }
            Ok(if code == exit::OK && found {
                exit::UNREADABLE
            } else {
                code
            })
        }
        Command::Tenants {
            command: TenantsCommand::List,
        } => {
            let pool = connect(url).await?;
            let mut rows = vec![report::LIST_HEADER.map(str::to_string).to_vec()];
            for outcome in tenants::inspect_all(&pool).await? {
                let mut row = vec![outcome.schema.to_string()];
                match outcome.result {
                    Ok(status) => row.extend(report::list_row(&status)),
                    Err(e) => {
                        eprintln!("duroxide-postgres: error: {}: {e}", outcome.schema);
                        row.extend(["-".to_string(), "-".to_string(), format!("error: {e}")]);
                    }
                }
                rows.push(row);
            }
            print!("{}", report::columns(&rows));
            Ok(exit::OK)
        }
        Command::Tenants {
            command: TenantsCommand::Drop { schema, force },
        } => {
            let schema = schema_name(&schema)?;
            let pool = connect(url).await?;
            let dropped = tenants::drop_tenant(&pool, &schema, force).await?;
            match dropped.queues {
                Some(q) => {
                    if q.live_leases() > 0 {
                        eprintln!(
                            "duroxide-postgres: warning: forced over {} live lease(s) of {schema}",
                            q.live_leases()
                        );
                    }
                    println!(
                        "dropped tenant {schema}: {} instance(s), {} queued message(s), {} queued activity(ies)",
                        q.instances, q.orchestrator_messages, q.worker_items
                    );
                }
                None => println!("dropped tenant {schema}"),
            }
            Ok(exit::OK)
        }
        Command::UninstallProcedures { schema } => {
            let schema = schema_name(&schema)?;
            let pool = connect(url).await?;
            let dropped = tenants::uninstall_procedures(&pool, &schema).await?;
            println!(
                "uninstalled {dropped} stored procedure(s) of {schema}; \
                 run its processes with DUROXIDE_POSTGRES_SQL_MODE=inline"
            );
            Ok(exit::OK)
        }
        Command::Grant {
            schema,
            role,
            inline,
        } => {
            let schema = schema_name(&schema)?;
            let pool = connect(url).await?;
            let mode = if inline {
                SqlMode::InlineSql
            } else {
                SqlMode::StoredProcedures
            };
            let rights = tenants::grant_runtime_role(&pool, &schema, &role, mode).await?;
            match mode {
                SqlMode::StoredProcedures => println!(
                    "granted {role} on {schema}: USAGE, EXECUTE on {} function(s) (none to PUBLIC)",
                    rights.executable_functions
                ),
                _ => println!(
                    "granted {role} on {schema}: USAGE, SELECT on {} table(s), \
                     INSERT/UPDATE/DELETE on {}",
                    rights.readable_tables, rights.writable_tables
                ),
            }
            Ok(exit::OK)
        }
        Command::Revoke { schema, role } => {
            let schema = schema_name(&schema)?;
            let pool = connect(url).await?;
            let left = tenants::revoke_runtime_role(&pool, &schema, &role).await?;
            println!(
                "revoked {role} on {schema}; left (through PUBLIC or membership): \
                 USAGE {}, {} executable function(s), {} readable table(s)",
                if left.usage { "yes" } else { "no" },
                left.executable_functions,
                left.readable_tables
            );
            Ok(exit::OK)
        }
    }
}

/// Prints a status table per tenant, returning the exit code of the first
/// tenant that failed (0 if none).
fn print_status(
    outcomes: Vec<(SchemaName, duroxide_postgres::Result<tenants::TenantStatus>)>,
) -> u8 {
    let mut code = exit::OK;
    for (i, (schema, result)) in outcomes.into_iter().enumerate() {
        if i > 0 {
            println!();
        }
        match result {
            Ok(tenant) => print!("{}", report::status_table(&tenant)),
            Err(e) => {
                println!("tenant {schema}\n  error: {e}");
                eprintln!("duroxide-postgres: error: {schema}: {e}");
                if code == exit::OK {
                    code = exit::code_of(&e);
                }
            }
        }
    }
    code
}

fn schema_name(name: &str) -> Result<SchemaName, Failure> {
    Ok(SchemaName::new(name)?)
}

/// The schemas a `--schema`/`--all` target names.
async fn resolve(pool: &PgPool, target: &Target) -> Result<Vec<SchemaName>, Failure> {
    if target.all {
        let schemas = tenants::list(pool).await?;
        if schemas.is_empty() {
            eprintln!("duroxide-postgres: no tenant schema in this database");
        }
        return Ok(schemas);
    }
    target.schemas.iter().map(|s| schema_name(s)).collect()
}

/// Prints one finished schema of a many-schema command: success on stdout,
/// failure on stderr.
fn progress<T>(p: &Progress<'_, T>, ok: impl Fn(&T) -> String) {
    let schema = &p.outcome.schema;
    match &p.outcome.result {
        Ok(value) => println!("[{}/{}] {schema}: {}", p.done, p.total, ok(value)),
        Err(e) => eprintln!(
            "duroxide-postgres: error: [{}/{}] {schema}: {e}",
            p.done, p.total
        ),
    }
}

/// The exit code of the first failed outcome, or 0.
fn first_failure<T>(outcomes: &[TenantOutcome<T>]) -> u8 {
    outcomes
        .iter()
        .find_map(|o| o.result.as_ref().err().map(exit::code_of))
        .unwrap_or(exit::OK)
}

/// A small pool on the database, or why there is none.
async fn connect(url: Option<&str>) -> Result<PgPool, Failure> {
    let Some(url) = url.filter(|u| !u.trim().is_empty()) else {
        return Err(Failure::new(
            exit::USAGE,
            "no database URL: set DATABASE_URL or pass --database-url",
        ));
    };
    let options = PostgresOptions::default()
        .generic_plans(false)
        .connect_options(url)
        .map_err(|e| Failure::new(exit::INVALID, format!("invalid database URL: {e}")))?
        .application_name("duroxide-postgres-cli");
    // One connection first, for the server's own error (a pool that cannot
    // connect reports only a time-out).
    let probe = PgConnection::connect_with(&options).await.map_err(|e| {
        let code = exit::connect_code(&e).unwrap_or(exit::CONNECT);
        Failure::new(code, format!("cannot connect to the database: {e}"))
    })?;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(15))
        .connect_lazy_with(options);
    let _ = probe.close().await;
    Ok(pool)
}
