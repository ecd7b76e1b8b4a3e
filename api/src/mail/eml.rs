//! Mails as `.eml` files in a directory, for running without an SMTP server.

use std::{fs, io, path::Path};

use super::SendError;

/// `message` as a new file `<UTC time>-<random>.eml` in `dir`. It is written under a hidden
/// temporary name and then renamed, so a reader never sees half a mail.
pub(super) async fn write(dir: &Path, message: Vec<u8>) -> Result<(), SendError> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || write_now(&dir, &message))
        .await
        .map_err(|e| SendError::File(io::Error::other(e)))?
        .map_err(SendError::File)
}

fn write_now(dir: &Path, message: &[u8]) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let name = format!(
        "{}-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ"),
        uuid::Uuid::new_v4().simple()
    );
    let temporary = dir.join(format!(".{name}.tmp"));
    fs::write(&temporary, message)?;
    fs::rename(&temporary, dir.join(format!("{name}.eml"))).inspect_err(|_| {
        let _ = fs::remove_file(&temporary);
    })
}
