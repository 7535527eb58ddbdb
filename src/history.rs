//! History reads and appends, KV store reads, custom status, instance stats.
//!
//! STUB: being implemented.

use std::collections::HashMap;

use duroxide::{Event, SystemStats};

use crate::error::{PgProviderError, Result};
use crate::provider::PostgresProvider;
use crate::sql::statements;

statements! {
    /// Statements for history, KV, custom status and stats.
    pub(crate) struct HistorySql {
    }
}

fn todo() -> PgProviderError {
    PgProviderError::invalid_input("history", "not implemented yet")
}

pub(crate) async fn read(_p: &PostgresProvider, _instance: &str) -> Result<Vec<Event>> {
    Err(todo())
}

pub(crate) async fn read_with_execution(
    _p: &PostgresProvider,
    _instance: &str,
    _execution_id: u64,
) -> Result<Vec<Event>> {
    Err(todo())
}

pub(crate) async fn append_with_execution(
    _p: &PostgresProvider,
    _instance: &str,
    _execution_id: u64,
    _events: &[Event],
) -> Result<()> {
    Err(todo())
}

pub(crate) async fn get_custom_status(
    _p: &PostgresProvider,
    _instance: &str,
    _last_seen_version: u64,
) -> Result<Option<(Option<String>, u64)>> {
    Err(todo())
}

pub(crate) async fn get_kv_value(
    _p: &PostgresProvider,
    _instance: &str,
    _key: &str,
) -> Result<Option<String>> {
    Err(todo())
}

pub(crate) async fn get_kv_all_values(
    _p: &PostgresProvider,
    _instance: &str,
) -> Result<HashMap<String, String>> {
    Err(todo())
}

pub(crate) async fn get_instance_stats(
    _p: &PostgresProvider,
    _instance: &str,
) -> Result<Option<SystemStats>> {
    Err(todo())
}
