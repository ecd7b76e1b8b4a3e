//! The `migration` binary operators run answers `--help` with its commands, without a
//! database. (Its behaviour against each backend is tested in `tests/tests/migration_cli.rs`;
//! this test is also what makes `cargo test --workspace` build the binary those tests run.)

use std::process::Command;

#[test]
fn help_lists_the_commands_without_a_database() {
    let output = Command::new(env!("CARGO_BIN_EXE_migration"))
        .arg("--help")
        .env_remove("DATABASE_URL")
        .output()
        .expect("the migration binary runs");

    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    for command in ["up", "down", "status", "fresh", "refresh", "reset"] {
        assert!(
            stdout
                .lines()
                .any(|line| line.trim_start().starts_with(command)),
            "`{command}` missing from --help:\n{stdout}"
        );
    }
}
