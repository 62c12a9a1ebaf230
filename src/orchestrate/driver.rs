//! The data directory's drive lock: one process at a time runs rollout and rollback
//! tasks from a registry. Until one server is the only driver, two Parley processes
//! on one data directory are supported, and this is what keeps them from pausing each
//! other's live rollouts at start-up or starting two rollouts of the same agents.
//!
//! It is an OS advisory lock (`flock`, through [`std::fs::File::try_lock`]) on
//! `<data-dir>/drive.lock`, taken when a process is about to drive (start, resume,
//! abort, roll back...) and let go when its last task ends. The kernel drops it when
//! the process dies, SIGKILL included, so a lock that can be taken means nobody is
//! driving: every unfinished deployment without a task here was left by a dead
//! process, and recovery may take it over. A process that finds the lock held does
//! not wait: it refuses to drive, naming the holder's pid, and stays free to read.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Who holds the lock, when this process could not take it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub path: PathBuf,
    /// As the holder wrote it; `None` if the file could not be read.
    pub pid: Option<u32>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.pid {
            Some(pid) => write!(f, "another Parley (pid {pid})"),
            None => f.write_str("another Parley"),
        }
    }
}

#[derive(Debug)]
pub(crate) struct DriveLock {
    path: PathBuf,
    /// Held while this process drives; `None` otherwise.
    file: Mutex<Option<File>>,
}

impl DriveLock {
    pub(crate) fn new(path: &Path) -> DriveLock {
        DriveLock { path: path.to_path_buf(), file: Mutex::new(None) }
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<File>> {
        // Only ever set or taken whole: a poisoned lock still holds a valid value.
        self.file.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes the lock unless this process has it. `Ok(true)`: taken just now (whatever
    /// was left unfinished is nobody's); `Ok(false)`: this process had it already.
    pub(crate) fn acquire(&self) -> Result<bool, Holder> {
        let mut slot = self.slot();
        if slot.is_some() {
            return Ok(false);
        }
        // Not truncated on open: the file may be another process's, pid and all.
        let mut file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&self.path).map_err(|e| {
                tracing::error!(path = %self.path.display(), error = %e, "could not open the drive lock");
                Holder { path: self.path.clone(), pid: None }
            })?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Holder { path: self.path.clone(), pid: holder_pid(&mut file) });
            }
            Err(std::fs::TryLockError::Error(e)) => {
                tracing::error!(path = %self.path.display(), error = %e, "could not take the drive lock");
                return Err(Holder { path: self.path.clone(), pid: None });
            }
        }
        // The pid is only a label for the message above; the lock is the flock.
        let written = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(std::process::id().to_string().as_bytes()));
        if let Err(e) = written {
            tracing::warn!(path = %self.path.display(), error = %e, "could not write the pid into the drive lock");
        }
        *slot = Some(file);
        Ok(true)
    }

    /// Lets the lock go (closing the file releases the flock).
    pub(crate) fn release(&self) {
        self.slot().take();
    }

    pub(crate) fn held(&self) -> bool {
        self.slot().is_some()
    }
}

/// The pid the holder wrote. A holder that took the lock an instant ago may not have
/// written it yet: look again a few times, briefly.
fn holder_pid(file: &mut File) -> Option<u32> {
    for _ in 0..20 {
        let mut text = String::new();
        if file.seek(SeekFrom::Start(0)).is_ok() && file.read_to_string(&mut text).is_ok() {
            if let Ok(pid) = text.trim().parse() {
                return Some(pid);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("drive.lock");
        let (a, b) = (DriveLock::new(&path), DriveLock::new(&path));
        assert_eq!(a.acquire(), Ok(true));
        assert_eq!(a.acquire(), Ok(false), "already held here");
        // flock locks belong to the open file, so a second open in this process
        // conflicts just as another process would.
        assert_eq!(b.acquire(), Err(Holder { path: path.clone(), pid: Some(std::process::id()) }));
        a.release();
        assert!(!a.held());
        assert_eq!(b.acquire(), Ok(true));
    }
}
