//! # duroxide-postgres
//!
//! A PostgreSQL storage provider for the [duroxide](https://crates.io/crates/duroxide)
//! durable-execution runtime.
//!
//! * **One schema per tenant.** A [`PostgresProvider`] is a (pool, schema)
//!   pair; many tenants can share one pool, and no statement depends on a
//!   connection's `search_path`.
//! * **Stored procedures.** Every provider operation is one call to a
//!   function installed in the tenant's schema: one round trip.
//! * **Or inline SQL** ([`SqlMode::InlineSql`], or `DUROXIDE_POSTGRES_SQL_MODE=inline`):
//!   the same statements sent from the client, needing no function in the
//!   database; both modes can serve one schema at once.
//! * **Long polling** with `LISTEN`/`NOTIFY` (one listening connection per
//!   pool, shared by every tenant): an empty fetch waits for committed work,
//!   the next due item or its `poll_timeout`. Notifications are sent after
//!   the commit, never inside a durable transaction.
//! * **Peek-lock queues**: activities claimed with `SELECT ... FOR UPDATE SKIP
//!   LOCKED`, orchestration instances by a per-instance claim row locked the
//!   same way, and a lease row; sessions pin activities to workers.
//! * **Embedded, checksummed migrations** serialized per schema by a lock
//!   on the schema's own bookkeeping table (which needs rights on it).
//! * **Tenant lifecycle** ([`tenants`]): list the tenants of a database with
//!   their version, SQL-mode readiness and queue depths, migrate or verify
//!   many at once, drop one, print a schema's install script, uninstall its
//!   procedures. The `duroxide-postgres` command (feature `cli`, on by
//!   default) does the same from a shell: see `docs/cli.md`.
//!
//! ```no_run
//! use std::sync::Arc;
//! use duroxide_postgres::{PostgresOptions, PostgresProvider};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let provider = PostgresProvider::connect_with(
//!     "postgres://localhost/app",
//!     PostgresOptions::default().schema("tenant_a"),
//! )
//! .await?;
//! let client = duroxide::Client::new(Arc::new(provider));
//! # let _ = client;
//! # Ok(())
//! # }
//! ```
//!
//! ## Features
//!
//! * `cli` (default): the `duroxide-postgres` operator command.
//! * `tls-rustls`: TLS to the server through sqlx's rustls backend; ask for
//!   it with `sslmode=require`, `verify-ca` or `verify-full` in the URL.
//! * `metrics`: counters and histograms through the `metrics` facade crate
//!   (docs/operations.md, "Monitoring").
//! * `throwaway`: `ThrowawayPostgres`, a disposable local server for tests
//!   and examples (never for production).
#![deny(missing_docs)]
#![warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod admin;
mod admission;
mod affinity;
mod claim_ahead;
mod codec;
mod config;
mod deletion;
mod driver;
mod embedded;
mod env_options;
mod error;
mod history;
mod inline;
mod lost_replies;
pub mod migrate;
mod notify;
mod observe;
mod orchestration_queue;
mod pooler;
mod prefetch;
mod probe;
mod provider;
mod provider_admin;
mod recycle;
mod reuse;
mod scan_floor;
mod schema;
mod sql;
mod statement_file;
mod store;
pub mod tenants;
#[cfg(feature = "throwaway")]
mod throwaway;
mod warm_up;
mod worker_queue;

pub use admin::OrphanedInstance;
pub use admission::AdmissionStats;
pub use codec::MAX_ID_BYTES;
pub use config::{MigrationMode, PostgresOptions, SqlMode};
pub use error::{PostgresProviderError, Result, sqlstate};

/// The former name of [`PostgresProviderError`].
#[deprecated(since = "0.1.0", note = "renamed to PostgresProviderError")]
pub type PgProviderError = PostgresProviderError;
pub use migrate::SchemaStatus;
pub use notify::NotificationStats;
#[doc(hidden)]
pub use probe::FetchProbe;
pub use provider::{HealthReport, PostgresProvider};
pub use schema::{MAX_SCHEMA_NAME_BYTES, SchemaName};
#[cfg(feature = "throwaway")]
pub use throwaway::ThrowawayPostgres;

/// The README's Rust example, compiled as a doc test so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
mod readme_example {}
