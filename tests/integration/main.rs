//! The integration-test binary: one module per area, sharing `support`.
//!
//! Every test runs against a real PostgreSQL: `DATABASE_URL` when set,
//! otherwise a throwaway server this process starts (scripts/pg-throwaway.sh).

mod affinity;
mod arrivals;
mod claim_ahead;
mod concurrency;
mod connectivity;
mod crash;
mod deletion_races;
mod differential;
mod fairness;
mod faults;
mod fetch_lease;
mod fixtures;
mod footprint;
mod held_snapshot;
mod hostile_search_path;
mod isolation;
mod limits;
mod load;
mod lost_replies;
mod metrics;
mod migrations;
mod modes;
mod notifications;
mod observability;
mod orphans;
mod outsiders;
mod pgbouncer;
mod plans;
mod pool_churn;
mod prefetch;
mod retention;
mod reuse;
mod roles;
mod schema_names;
mod sessions;
mod stalls;
mod support;
mod tags;
mod tenants;
mod tls;
mod transient;
mod unreadable;
mod upgrades;
mod validation;
mod warm_up;
