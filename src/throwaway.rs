//! A throwaway local PostgreSQL server for examples, tests and benchmarks
//! (feature `throwaway`; never for production).
//!
//! Runs the crate's `scripts/pg-throwaway.sh` (embedded in the binary): it
//! installs PostgreSQL from Debian packages when absent, creates a cluster in a
//! temporary directory (as the `postgres` user when running as root, since
//! `initdb` refuses root), starts it on a free loopback port, and stops and
//! deletes it when this process exits.

use std::process::Command;

use crate::error::{PostgresProviderError, Result};

const SCRIPT: &str = include_str!("../scripts/pg-throwaway.sh");

/// A running throwaway server; it lives until the current process exits.
#[derive(Debug, Clone)]
pub struct ThrowawayPostgres {
    url: String,
    dir: String,
}

impl ThrowawayPostgres {
    /// Starts a server with the script's defaults (fsync off: for tests only).
    ///
    /// Blocking: call it before entering an async runtime, or from
    /// `spawn_blocking`.
    ///
    /// # Errors
    /// [`PostgresProviderError::Throwaway`] carrying the script's output when the
    /// server cannot be installed or started.
    pub fn start() -> Result<Self> {
        Self::start_with_args(&[])
    }

    /// Starts a server passing extra arguments to the script, e.g.
    /// `["--durable"]` or `["--conf", "max_connections=800"]`.
    ///
    /// # Errors
    /// As [`ThrowawayPostgres::start`].
    pub fn start_with_args(args: &[&str]) -> Result<Self> {
        let owner = std::process::id().to_string();
        let output = Command::new("bash")
            .arg("-c")
            .arg(SCRIPT)
            .arg("pg-throwaway.sh")
            .args(["--owner-pid", &owner])
            .args(args)
            .output()
            .map_err(|e| PostgresProviderError::Throwaway {
                reason: format!("cannot run bash: {e}"),
            })?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let value = |key: &str| {
            stdout
                .lines()
                .find_map(|line| line.strip_prefix(key).map(str::to_string))
        };
        match (
            output.status.success(),
            value("DATABASE_URL="),
            value("PGTHROWAWAY_DIR="),
        ) {
            (true, Some(url), Some(dir)) => Ok(Self { url, dir }),
            _ => Err(PostgresProviderError::Throwaway {
                reason: format!(
                    "pg-throwaway.sh failed ({}): {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr)
                ),
            }),
        }
    }

    /// The connection URL (`postgres://postgres@127.0.0.1:PORT/postgres`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The cluster's directory (data and server log).
    pub fn dir(&self) -> &str {
        &self.dir
    }
}
