//! Fetching an artifact into a local file: from a path, a `file://` URL or over
//! HTTP(S), under a size limit and a time limit, resuming a partial download with a
//! `Range` request when the server allows it. The SHA-256 is computed while the bytes
//! arrive and checked before anyone unpacks them.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::{ArtifactError, ArtifactRef};

#[derive(Debug, Clone, Copy)]
pub struct FetchLimits {
    /// Largest artifact accepted, bytes.
    pub max_bytes: u64,
    /// The whole download, connecting included.
    pub timeout: Duration,
}

impl Default for FetchLimits {
    fn default() -> Self {
        FetchLimits { max_bytes: 512 * 1024 * 1024, timeout: Duration::from_secs(300) }
    }
}

/// A verified artifact on local disk.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub path: PathBuf,
    pub size: u64,
    pub sha256: String,
}

/// Where an artifact reference points.
enum Source {
    File(PathBuf),
    Http(String),
}

fn source_of(url: &str) -> Result<Source, ArtifactError> {
    if let Some(rest) = url.strip_prefix("file://") {
        return Ok(Source::File(PathBuf::from(rest)));
    }
    if url.starts_with("http://") || url.starts_with("https://") {
        return Ok(Source::Http(url.to_string()));
    }
    if url.contains("://") {
        return Err(ArtifactError::BadReference(format!("`{url}`: only paths, file:// and http(s):// are supported")));
    }
    Ok(Source::File(PathBuf::from(url)))
}

/// Fetches `artifact` into `part` (kept on failure so a later fetch can resume an HTTP
/// download; removed when what it holds is wrong), then checks size and SHA-256.
/// Returns the verified file (still at `part`).
pub async fn fetch(
    http: &reqwest::Client,
    artifact: &ArtifactRef,
    part: &Path,
    limits: FetchLimits,
) -> Result<Fetched, ArtifactError> {
    artifact.check()?;
    let url = artifact.url.clone();
    let limit = match artifact.size {
        Some(size) if size > limits.max_bytes => return Err(ArtifactError::TooLarge { url, limit: limits.max_bytes }),
        // One byte more than announced is enough to tell a wrong size.
        Some(size) => size.saturating_add(1),
        None => limits.max_bytes,
    };
    let started = Instant::now();
    let fetched = match source_of(&url)? {
        Source::File(path) => {
            let part = part.to_path_buf();
            let url = url.clone();
            tokio::task::spawn_blocking(move || copy_file(&path, &part, &url, limit))
                .await
                .map_err(|e| ArtifactError::Fetch { url: artifact.url.clone(), reason: e.to_string() })?
        }
        Source::Http(u) => match tokio::time::timeout(limits.timeout, download(http, &u, part, limit)).await {
            Ok(r) => r,
            Err(_) => Err(ArtifactError::Timeout { url: u, ms: limits.timeout.as_millis() as u64 }),
        },
    };
    let (size, sha256) = match fetched {
        Ok(done) => done,
        Err(e @ ArtifactError::TooLarge { .. }) => {
            let _ = std::fs::remove_file(part);
            return Err(match artifact.size {
                Some(want) => ArtifactError::LargerThanSaid { url, want },
                None => e,
            });
        }
        Err(e) => return Err(e),
    };
    tracing::debug!(%url, size, ms = started.elapsed().as_millis() as u64, "artifact fetched");
    if let Some(want) = artifact.size {
        if size != want {
            let _ = std::fs::remove_file(part);
            return Err(ArtifactError::WrongSize { url, want, got: size });
        }
    }
    if !sha256.eq_ignore_ascii_case(&artifact.sha256) {
        let _ = std::fs::remove_file(part);
        return Err(ArtifactError::HashMismatch { url, want: artifact.sha256.to_ascii_lowercase(), got: sha256 });
    }
    Ok(Fetched { path: part.to_path_buf(), size, sha256 })
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// Copies a local artifact, hashing as it goes; a file over `limit` bytes is refused.
fn copy_file(from: &Path, part: &Path, url: &str, limit: u64) -> Result<(u64, String), ArtifactError> {
    let fetch_err = |e: std::io::Error| ArtifactError::Fetch { url: url.to_string(), reason: e.to_string() };
    let mut src = std::fs::File::open(from).map_err(fetch_err)?;
    let mut dst = std::fs::File::create(part).map_err(ArtifactError::io(format!("writing {}", part.display())))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = src.read(&mut buf).map_err(fetch_err)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > limit {
            return Err(ArtifactError::TooLarge { url: url.to_string(), limit });
        }
        hasher.update(&buf[..n]);
        dst.write_all(&buf[..n]).map_err(ArtifactError::io(format!("writing {}", part.display())))?;
    }
    dst.sync_all().map_err(ArtifactError::io(format!("writing {}", part.display())))?;
    Ok((total, super::hex(&hasher.finalize())))
}

/// Downloads `url` into `part`, resuming from what `part` already holds when the
/// server answers a `Range` request with 206; any other answer starts over.
async fn download(http: &reqwest::Client, url: &str, part: &Path, limit: u64) -> Result<(u64, String), ArtifactError> {
    let fetch_err = |reason: String| ArtifactError::Fetch { url: url.to_string(), reason };
    let have = file_len(part);
    let mut req = http.get(url);
    if have > 0 && have <= limit {
        req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
    }
    let mut resp = req.send().await.map_err(|e| fetch_err(root_cause(&e)))?;
    let status = resp.status();
    let resumed = have > 0 && status == reqwest::StatusCode::PARTIAL_CONTENT;
    if !status.is_success() {
        return Err(fetch_err(format!("the server answered {status}")));
    }
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    let mut file = if resumed {
        // Hash what is already there, then append.
        let mut f = std::fs::File::open(part).map_err(ArtifactError::io(format!("reading {}", part.display())))?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = f.read(&mut buf).map_err(ArtifactError::io(format!("reading {}", part.display())))?;
            if n == 0 {
                break;
            }
            total += n as u64;
            hasher.update(&buf[..n]);
        }
        tracing::info!(%url, from = total, "resuming the download");
        std::fs::OpenOptions::new()
            .append(true)
            .open(part)
            .map_err(ArtifactError::io(format!("writing {}", part.display())))?
    } else {
        std::fs::File::create(part).map_err(ArtifactError::io(format!("writing {}", part.display())))?
    };
    if let Some(len) = resp.content_length() {
        if total + len > limit {
            return Err(ArtifactError::TooLarge { url: url.to_string(), limit });
        }
    }
    while let Some(chunk) = resp.chunk().await.map_err(|e| fetch_err(root_cause(&e)))? {
        total += chunk.len() as u64;
        if total > limit {
            return Err(ArtifactError::TooLarge { url: url.to_string(), limit });
        }
        hasher.update(&chunk);
        file.write_all(&chunk).map_err(ArtifactError::io(format!("writing {}", part.display())))?;
    }
    file.sync_all().map_err(ArtifactError::io(format!("writing {}", part.display())))?;
    Ok((total, super::hex(&hasher.finalize())))
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A loopback HTTP server that serves `body`, honouring `Range: bytes=N-` with 206
    /// and recording the ranges asked for; with `stall`, it sends headers and then
    /// nothing.
    async fn server(body: Vec<u8>, stall: bool) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/a.tar.gz", listener.local_addr().unwrap());
        let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = asked.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let mut buf = vec![0u8; 4096];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let from = head
                    .lines()
                    .find_map(|l| l.strip_prefix("range: bytes=").or_else(|| l.strip_prefix("Range: bytes=")))
                    .and_then(|r| r.trim_end_matches('-').parse::<usize>().ok());
                seen.lock().unwrap().push(from.map(|f| format!("{f}-")).unwrap_or_default());
                let (status, part) = match from {
                    Some(f) => ("206 Partial Content", &body[f..]),
                    None => ("200 OK", &body[..]),
                };
                let head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", part.len());
                let _ = sock.write_all(head.as_bytes()).await;
                if stall {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
                let _ = sock.write_all(part).await;
            }
        });
        (url, asked)
    }

    #[tokio::test]
    async fn a_partial_download_is_resumed_and_the_whole_is_verified() {
        let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let (url, asked) = server(body.clone(), false).await;
        let tmp = tempfile::tempdir().unwrap();
        let part = tmp.path().join("a.part");
        // What an interrupted download left behind.
        std::fs::write(&part, &body[..40_000]).unwrap();
        let a = ArtifactRef {
            url,
            sha256: crate::artifact::sha256_hex(&body),
            size: Some(body.len() as u64),
            signature: None,
        };
        let got = fetch(&reqwest::Client::new(), &a, &part, FetchLimits::default()).await.unwrap();
        assert_eq!((got.size, got.sha256.as_str()), (100_000, a.sha256.as_str()));
        assert_eq!(std::fs::read(&part).unwrap(), body);
        assert_eq!(*asked.lock().unwrap(), ["40000-"]);
    }

    #[tokio::test]
    async fn a_download_over_the_limit_or_the_time_is_refused() {
        let body = vec![7u8; 10_000];
        let (url, _) = server(body.clone(), false).await;
        let tmp = tempfile::tempdir().unwrap();
        let part = tmp.path().join("a.part");
        let a =
            ArtifactRef { url: url.clone(), sha256: crate::artifact::sha256_hex(&body), size: None, signature: None };
        let limits = FetchLimits { max_bytes: 9_999, timeout: Duration::from_secs(5) };
        let e = fetch(&reqwest::Client::new(), &a, &part, limits).await.unwrap_err();
        assert_eq!(e.to_string(), format!("{url} is over the size limit of 9999 bytes"));
        assert!(!part.exists());

        let (url, _) = server(body, true).await;
        let a = ArtifactRef { url: url.clone(), ..a };
        let limits = FetchLimits { max_bytes: 1 << 20, timeout: Duration::from_millis(300) };
        let e = fetch(&reqwest::Client::new(), &a, &part, limits).await.unwrap_err();
        assert_eq!(e.to_string(), format!("{url} did not finish downloading within 300 ms"));
    }
}
