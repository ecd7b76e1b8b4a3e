//! `harness-probe BACKEND [panic]`: create the run's databases for BACKEND as tests would —
//! the template, the rollback-mode database and a private one — print their URLs (the
//! rollback-mode one first), then exit normally or panic. The harness's own tests run it to
//! prove every one is dropped at exit either way.

use tests::{Backend, RunDatabase};

fn main() {
    let mut args = std::env::args().skip(1);
    let backend = match args.next().as_deref() {
        Some("postgres") => Backend::Postgres,
        Some("mysql") => Backend::MySql,
        Some("sqlite") => Backend::Sqlite,
        other => {
            eprintln!("harness-probe: unknown backend {other:?}");
            std::process::exit(2);
        }
    };
    let run = RunDatabase::get(backend);
    println!("{}", run.url_for_test());
    let private = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(run.private_database());
    println!("{}", private.url());
    if args.next().as_deref() == Some("panic") {
        panic!("harness-probe panics on purpose");
    }
}
