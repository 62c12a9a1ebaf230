//! The server's listeners: always the Unix socket `<data-dir>/parley.sock` (mode 0600,
//! each connection tagged with its peer's uid from `SO_PEERCRED`), and a TCP address
//! only with `--listen`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::net::{UnixListener, UnixStream};

use super::ServeError;

/// Who is on the other end of a Unix-socket connection.
#[derive(Debug, Clone)]
pub struct Peer {
    /// `None` when the kernel would not say.
    pub uid: Option<u32>,
}

/// A Unix listener whose connections carry their peer's credentials.
pub struct UnixPeers(pub UnixListener);

impl Listener for UnixPeers {
    type Io = UnixStream;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((stream, _)) => {
                    let uid = stream.peer_cred().ok().map(|c| c.uid());
                    return (stream, Peer { uid });
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "accepting on the Unix socket failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(Peer { uid: None })
    }
}

impl Connected<IncomingStream<'_, UnixPeers>> for Peer {
    fn connect_info(stream: IncomingStream<'_, UnixPeers>) -> Self {
        stream.remote_addr().clone()
    }
}

/// Binds the socket. A socket file nobody answers on (a server that was killed) is
/// replaced; one that answers means a server already runs on this data directory.
pub async fn bind_unix(path: &Path) -> Result<UnixListener, ServeError> {
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(ServeError::AlreadyRunning(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(|source| ServeError::Bind { what: path.display().to_string(), source })?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| ServeError::Bind { what: dir.display().to_string(), source })?;
    }
    let listener =
        UnixListener::bind(path).map_err(|source| ServeError::Bind { what: path.display().to_string(), source })?;
    // The uid check is the rule; the mode keeps other users from even connecting.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|source| ServeError::Bind { what: path.display().to_string(), source })?;
    Ok(listener)
}

/// Removes the socket file when the server ends, so clients find no stale one.
pub struct SocketFile(pub PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
