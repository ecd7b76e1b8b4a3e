//! `harness-probe BACKEND [panic]`: create the run's database for BACKEND as a test would,
//! print its name, then exit normally or panic. The harness's own tests run it to prove the
//! database is dropped at exit either way.

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
    if args.next().as_deref() == Some("panic") {
        panic!("harness-probe panics on purpose");
    }
}
