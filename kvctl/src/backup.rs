//! `kvctl backup FILE`: downloads `GET /admin/backup` into a temporary
//! file beside FILE, checks it (header, length, end marker and checksum,
//! with kv-replica's reader, in constant memory), makes it durable and
//! renames it into place. FILE is never left holding a partial or damaged
//! copy: on any failure the temporary file is removed and FILE is as it
//! was. Prints the revision the copy was taken at.

use crate::Context;
use crate::cli::Output;
use crate::client::Failure;
use kv_replica::backup::check_backup;
use serde_json::json;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};

pub fn backup(ctx: &Context, file: &Path) -> Result<u8, Failure> {
    let temp = temp_path(file)?;
    let result = download_into(ctx, &temp);
    let (endpoint, revision, bytes) = match result {
        Ok(done) => done,
        Err(failure) => {
            let _ = fs::remove_file(&temp);
            return Err(failure);
        }
    };
    if let Err(e) = fs::rename(&temp, file) {
        let _ = fs::remove_file(&temp);
        return Err(local(format!("cannot rename into {}: {e}", file.display())));
    }
    // The rename is durable once the directory is.
    if let Some(parent) = parent_dir(file) {
        let _ = File::open(parent).and_then(|d| d.sync_all());
    }
    match ctx.output {
        Output::Json => crate::output::print_json(&json!({
            "revision": revision,
            "bytes": bytes,
            "file": file.display().to_string(),
            "endpoint": endpoint,
        })),
        Output::Table => println!(
            "backup of revision {revision} ({bytes} bytes) from {endpoint} written to {}",
            file.display()
        ),
    }
    Ok(0)
}

fn local(message: String) -> Failure {
    Failure::Client(message)
}

fn parent_dir(file: &Path) -> Option<&Path> {
    match file.parent() {
        Some(parent) if parent.as_os_str().is_empty() => Some(Path::new(".")),
        other => other,
    }
}

/// `.FILE.part-PID` in FILE's directory, so that the rename stays on one
/// file system.
fn temp_path(file: &Path) -> Result<PathBuf, Failure> {
    let name = file
        .file_name()
        .ok_or_else(|| Failure::Usage(format!("{} is not a file name", file.display())))?;
    let mut temp = std::ffi::OsString::from(".");
    temp.push(name);
    temp.push(format!(".part-{}", std::process::id()));
    Ok(parent_dir(file).unwrap_or(Path::new(".")).join(temp))
}

/// Downloads into `temp`, fsyncs it and checks it; returns the endpoint,
/// the revision and the size in bytes.
fn download_into(ctx: &Context, temp: &Path) -> Result<(String, u64, u64), Failure> {
    let mut download = ctx.client.download("/admin/backup")?;
    let endpoint = download.endpoint.clone();
    let header_revision = download
        .headers
        .get("x-kv-revision")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(temp)
        .map_err(|e| local(format!("cannot create {}: {e}", temp.display())))?;
    let write_failed = |e: std::io::Error| local(format!("writing {} failed: {e}", temp.display()));
    while let Some(chunk) = download.next_chunk()? {
        out.write_all(&chunk).map_err(write_failed)?;
    }
    out.sync_all().map_err(write_failed)?;
    drop(out);
    let reader = File::open(temp).map_err(write_failed)?;
    let info = check_backup(&mut BufReader::new(reader)).map_err(|e| {
        local(format!(
            "the backup downloaded from {endpoint} is refused: {e}"
        ))
    })?;
    if header_revision.is_some_and(|r| r != info.revision) {
        return Err(local(format!(
            "{endpoint} announced revision {} but the file holds revision {}",
            header_revision.unwrap_or_default(),
            info.revision
        )));
    }
    Ok((endpoint, info.revision, info.total_bytes))
}
