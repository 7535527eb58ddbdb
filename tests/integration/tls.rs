//! TLS (feature `tls-rustls`, on in the crate's tests): a throwaway server of
//! its own with `ssl = on` and a certificate signed by a test CA made with
//! `openssl`; the provider connects with `sslmode=require` and
//! `verify-full`, and verification refuses a server signed by another CA.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use duroxide_postgres::{PostgresOptions, PostgresProvider, ThrowawayPostgres};
use sqlx::{Connection, PgConnection};

use crate::support::fresh_schema_name;

/// Runs `openssl` with `args` in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl: {e}"));
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A CA (`NAME-ca.crt`) and, unless `ca_only`, a server certificate and key
/// for `localhost` / `127.0.0.1` that it signed, all EC P-256.
fn certificates(dir: &Path, name: &str, ca_only: bool) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let (ca_key, ca_crt) = (format!("{name}-ca.key"), format!("{name}-ca.crt"));
    let mut args = vec![
        "req",
        "-x509",
        "-days",
        "2",
        "-subj",
        "/CN=duroxide test CA",
    ];
    args.extend(ec);
    args.extend(["-keyout", &ca_key, "-out", &ca_crt]);
    openssl(dir, &args);
    if ca_only {
        return;
    }
    let mut args = vec!["req", "-subj", "/CN=localhost"];
    args.extend(ec);
    args.extend(["-keyout", "server.key", "-out", "server.csr"]);
    openssl(dir, &args);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .expect("extension file");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            "server.csr",
            "-CA",
            &ca_crt,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ],
    );
}

/// A throwaway server with TLS on, and the directory holding the test CAs
/// (`good-ca.crt` signed its certificate, `other-ca.crt` did not).
fn tls_server() -> &'static (ThrowawayPostgres, PathBuf) {
    static SERVER: OnceLock<(ThrowawayPostgres, PathBuf)> = OnceLock::new();
    // Blocking work (openssl, the server's start) on a thread of its own,
    // outside the calling test's runtime.
    SERVER.get_or_init(|| {
        std::thread::spawn(start_tls_server)
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

fn start_tls_server() -> (ThrowawayPostgres, PathBuf) {
    // TLS needs TCP: the script's default is a Unix socket only.
    let server = ThrowawayPostgres::start_with_args(&["--tcp"])
        .unwrap_or_else(|e| panic!("TLS server: {e}"));
    // Inside the server's directory, which its watchdog deletes with it.
    let dir = PathBuf::from(server.dir()).join("tls");
    std::fs::create_dir_all(&dir).expect("certificate directory");
    certificates(&dir, "good", false);
    certificates(&dir, "other", true);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        // The certificate and key go into the data directory, owned by the
        // server's user with mode 0600, as the server requires of a key.
        let plain = format!("{}?sslmode=disable", server.url());
        let mut conn = PgConnection::connect(&plain)
            .await
            .expect("plain connection");
        let data: String =
            sqlx::query_scalar("SELECT pg_catalog.current_setting('data_directory')")
                .fetch_one(&mut conn)
                .await
                .expect("data directory");
        let data = PathBuf::from(data);
        let owner = std::fs::metadata(&data).expect("data directory metadata");
        for file in ["server.crt", "server.key"] {
            let target = data.join(format!("duroxide-test-{file}"));
            std::fs::copy(dir.join(file), &target).expect("copy into the data directory");
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600))
                .expect("mode 0600");
            std::os::unix::fs::chown(&target, Some(owner.uid()), Some(owner.gid()))
                .expect("owned by the server's user");
        }
        // One statement each: ALTER SYSTEM refuses a (multi-statement) block.
        for setting in [
            "ALTER SYSTEM SET ssl_cert_file = 'duroxide-test-server.crt'",
            "ALTER SYSTEM SET ssl_key_file = 'duroxide-test-server.key'",
            "ALTER SYSTEM SET ssl = on",
            "SELECT pg_catalog.pg_reload_conf()",
        ] {
            sqlx::raw_sql(setting)
                .execute(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("{setting}: {e}"));
        }
        // The reload is asynchronous: wait until a new session sees TLS on.
        let required = format!("{}?sslmode=require", server.url());
        let mut attempts = 0;
        while let Err(e) = PgConnection::connect(&required).await {
            attempts += 1;
            assert!(attempts < 200, "TLS never came on: {e}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    });
    (server, dir)
}

/// Whether the session on `provider`'s pool is encrypted.
async fn encrypted(provider: &PostgresProvider) -> bool {
    sqlx::query_scalar(
        "SELECT ssl FROM pg_catalog.pg_stat_ssl WHERE pid = pg_catalog.pg_backend_pid()",
    )
    .fetch_one(provider.pool())
    .await
    .expect("pg_stat_ssl")
}

/// Connects a provider on a fresh schema with `query` added to the URL,
/// checks it is ready and encrypted, and drops the schema.
async fn provider_over_tls(query: &str) {
    let (server, _) = tls_server();
    let schema = fresh_schema_name("tls");
    let url = format!("{}?{query}", server.url());
    let options = PostgresOptions::default()
        .schema(schema.clone())
        .max_connections(2)
        .notifications(false);
    let provider = PostgresProvider::connect_with(&url, options)
        .await
        .unwrap_or_else(|e| panic!("provider over TLS ({query}): {e}"));
    assert!(provider.health().await.is_ready());
    assert!(encrypted(&provider).await, "{query}: session not encrypted");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA \"{schema}\" CASCADE"
    )))
    .execute(provider.pool())
    .await
    .expect("drop schema");
    provider.pool().close().await;
}

#[tokio::test]
async fn require_encrypts_without_verifying() {
    provider_over_tls("sslmode=require").await;
}

#[tokio::test]
async fn verify_full_accepts_the_server_its_ca_signed() {
    let (_, dir) = tls_server();
    let ca = dir.join("good-ca.crt");
    provider_over_tls(&format!("sslmode=verify-full&sslrootcert={}", ca.display())).await;
}

#[tokio::test]
async fn verify_ca_refuses_a_server_another_ca_signed() {
    let (server, dir) = tls_server();
    provider_over_tls(&format!(
        "sslmode=verify-ca&sslrootcert={}",
        dir.join("good-ca.crt").display()
    ))
    .await;
    let url = format!(
        "{}?sslmode=verify-ca&sslrootcert={}",
        server.url(),
        dir.join("other-ca.crt").display()
    );
    let options = PostgresOptions::default()
        .schema(fresh_schema_name("tls_refused"))
        .max_connections(1)
        .notifications(false);
    let refused = PostgresProvider::connect_with(&url, options).await;
    assert!(
        refused.is_err(),
        "a server signed by another CA was accepted"
    );
}
