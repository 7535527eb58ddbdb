//! CPU time of the runtime's server backends, and of this process (client,
//! runtime and provider together), read from `/proc`.
//!
//! `pg_stat_statements` time is not comparable across SQL modes: a procedure
//! call's execution time includes everything its nested statements cost
//! (plan-cache revalidation, relation locks, the function call itself), while
//! for an inline statement those steps happen outside `total_exec_time`.
//! Backend CPU counts the same thing in both modes. It is available when the
//! server runs on this machine (the tool's own throwaway server, or a local
//! `DATABASE_URL`); otherwise it reads n/a.

use std::collections::HashMap;

use sqlx::PgPool;

/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU milliseconds used so far by each backend of `role`, by pid.
pub type Snapshot = HashMap<i32, f64>;

/// Reads the CPU time of every backend of `role` in this database.
pub async fn snapshot(admin: &PgPool, role: &str) -> Option<Snapshot> {
    let pids: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE usename = $1 AND datname = current_database()",
    )
    .bind(role)
    .fetch_all(admin)
    .await
    .ok()?;
    let mut cpu = Snapshot::new();
    for pid in pids {
        cpu.insert(pid, cpu_ms(pid)?);
    }
    Some(cpu)
}

/// CPU used between two snapshots by the backends alive at the second (a
/// backend that started in between counts from zero; one that exited in
/// between is lost, which the runtime's long-lived pool makes rare).
pub fn used_ms(before: &Snapshot, after: &Snapshot) -> f64 {
    after
        .iter()
        .map(|(pid, ms)| ms - before.get(pid).copied().unwrap_or(0.0))
        .sum()
}

/// CPU this process has used so far, all its threads (client, runtime and
/// provider: on a host whose cores bound throughput, a provider's cost in
/// the application counts beside its server's).
pub fn own_ms() -> Option<f64> {
    cpu_ms(i32::try_from(std::process::id()).ok()?)
}

/// utime + stime of a process, in ms.
fn cpu_ms(pid: i32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name, which may contain spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state): utime and stime are fields 14 and 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) * 1000.0 / TICKS_PER_SECOND)
}
