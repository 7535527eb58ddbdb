//! The integration-test binary: one module per area, sharing `support`.
//!
//! Every test runs against a real PostgreSQL: `DATABASE_URL` when set,
//! otherwise a throwaway server this process starts (scripts/pg-throwaway.sh).

mod concurrency;
mod differential;
mod faults;
mod fixtures;
mod load;
mod migrations;
mod modes;
mod notifications;
mod plans;
mod schema_names;
mod support;
mod validation;
