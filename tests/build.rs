//! Which server backends these tests run on, decided when they are built, so that the test
//! output can report an unconfigured backend's tests as ignored — with the reason — instead
//! of as passed.
//!
//! `cfg(tests_postgres)` / `cfg(tests_mysql)` are set when `TEST_POSTGRES_URL` /
//! `TEST_MYSQL_URL` is set, or when `TEST_ALL_BACKENDS=1` requires every backend (the tests
//! then run, and fail if the URL is missing). Cargo runs this again, and rebuilds the tests,
//! whenever one of these variables changes.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=TEST_ALL_BACKENDS");
    let required = matches!(
        std::env::var("TEST_ALL_BACKENDS").as_deref(),
        Ok("1" | "true")
    );
    for (cfg, var) in [
        ("tests_postgres", "TEST_POSTGRES_URL"),
        ("tests_mysql", "TEST_MYSQL_URL"),
        ("tests_postgres_replica", "TEST_POSTGRES_REPLICA_URL"),
    ] {
        println!("cargo::rerun-if-env-changed={var}");
        println!("cargo::rustc-check-cfg=cfg({cfg})");
        let set = std::env::var(var).is_ok_and(|url| !url.trim().is_empty());
        if set || required {
            println!("cargo::rustc-cfg={cfg}");
        }
        if required && !set {
            println!(
                "cargo::warning=TEST_ALL_BACKENDS=1 but {var} is not set: its tests will fail"
            );
        }
    }
}
