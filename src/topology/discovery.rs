//! Discovery beyond the inventory file: the registration endpoint (agents announce
//! themselves, see [`super::registration`]) and DNS SRV records (each target:port of
//! an SRV name is an agent at `http://target:port`). Both feed the same poller as the
//! inventory file, in any combination (docs/discovery.md).
//!
//! The SRV lookup is a minimal DNS client (one question, SRV answers, name
//! compression) rather than a resolver crate: it is all this needs, and it keeps the
//! dependency tree and build time small. It asks over UDP and, when the answer comes
//! back truncated (the TC bit: a large fleet does not fit in a datagram), asks again
//! over TCP as RFC 1035 4.2.2 says, with each message behind a two-byte length.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::inventory::InventoryEntry;
use super::poller::Poller;
use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("the registration endpoint could not listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("DNS SRV lookup of {name}: {reason}")]
    Srv { name: String, reason: String },
}

/// Starts what `config` asks for; the tasks end when `stop` turns true.
pub async fn start(
    config: &Config,
    poller: &Arc<Poller>,
    stop: watch::Receiver<bool>,
) -> Result<Vec<JoinHandle<()>>, DiscoveryError> {
    let mut tasks = Vec::new();
    if let Some(addr) = config.discovery_listen {
        let listener =
            tokio::net::TcpListener::bind(addr).await.map_err(|source| DiscoveryError::Bind { addr, source })?;
        tracing::info!(%addr, "registration endpoint listening");
        let mut stop = stop.clone();
        let poller = Arc::clone(poller);
        // Bindings (names, endpoints, credential hashes) outlive a restart of Parley.
        let options = super::registration::RegistrationOptions {
            token: config.agent_token.clone(),
            bindings_file: Some(config.data_dir.join("registrations.json")),
            ..Default::default()
        };
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        // Called here, not in the task: the bindings are loaded before `start` returns.
        let serving = super::registration::serve_with(listener, poller, &options, shutdown);
        tasks.push(tokio::spawn(async move {
            if let Err(e) = serving.await {
                tracing::error!(error = %e, "the registration endpoint stopped");
            }
        }));
    }
    if let Some(name) = config.discovery_srv.clone() {
        let poller = Arc::clone(poller);
        let interval = config.srv_interval;
        let mut stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            loop {
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    _ = ticks.tick() => {}
                }
                let server = match system_nameserver() {
                    Some(s) => s,
                    None => {
                        tracing::warn!("no nameserver in /etc/resolv.conf; SRV discovery waits");
                        continue;
                    }
                };
                match lookup_srv(&name, server, Duration::from_secs(3)).await {
                    Ok(records) => {
                        let added = srv_entries(&records).into_iter().filter(|e| poller.add_entry(e.clone())).count();
                        tracing::info!(%name, records = records.len(), added, "SRV discovery");
                    }
                    Err(e) => tracing::warn!(error = %e, "SRV discovery failed; keeping the agents already known"),
                }
            }
        }));
    }
    Ok(tasks)
}

/// One SRV answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub target: String,
}

/// The agents an SRV answer names: `http://target:port`, in priority then weight
/// order, without duplicates. Every target is an agent: priorities order the list
/// but do not hide anyone, since Parley must watch the whole fleet.
pub fn srv_entries(records: &[SrvRecord]) -> Vec<InventoryEntry> {
    let mut sorted: Vec<&SrvRecord> = records.iter().filter(|r| r.port != 0 && r.target != ".").collect();
    sorted.sort_by(|a, b| a.priority.cmp(&b.priority).then(b.weight.cmp(&a.weight)).then(a.target.cmp(&b.target)));
    let mut out: Vec<InventoryEntry> = Vec::with_capacity(sorted.len());
    for r in sorted {
        let host = r.target.trim_end_matches('.');
        let endpoint = format!("http://{host}:{}", r.port);
        if !out.iter().any(|e| e.endpoint == endpoint) {
            out.push(InventoryEntry { endpoint, name: None, region: None, zone: None });
        }
    }
    out
}

/// The first nameserver of /etc/resolv.conf.
fn system_nameserver() -> Option<SocketAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").ok()?;
    text.lines().find_map(|l| {
        let ip = l.trim().strip_prefix("nameserver")?.trim();
        ip.parse::<std::net::IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53))
    })
}

/// Asks `server` for the SRV records of `name` over UDP, and over TCP when the UDP
/// answer is truncated; `timeout` bounds the whole lookup.
pub async fn lookup_srv(name: &str, server: SocketAddr, timeout: Duration) -> Result<Vec<SrvRecord>, DiscoveryError> {
    let fail = |reason: String| DiscoveryError::Srv { name: name.to_string(), reason };
    let late = || fail(format!("{server} did not answer within {timeout:?}"));
    let deadline = tokio::time::Instant::now() + timeout;
    let id = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(7)
        & 0xffff) as u16;
    let query = srv_query(name, id).map_err(|r| fail(r.to_string()))?;
    let bind: SocketAddr =
        if server.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
    let socket = tokio::net::UdpSocket::bind(bind).await.map_err(|e| fail(e.to_string()))?;
    // Connected, so datagrams from anyone but the server are not taken for its answer.
    socket.connect(server).await.map_err(|e| fail(e.to_string()))?;
    socket.send(&query).await.map_err(|e| fail(e.to_string()))?;
    let mut buf = vec![0u8; 4096];
    let n = match tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => return Err(fail(e.to_string())),
        Err(_) => return Err(late()),
    };
    let answer = buf.get(..n).unwrap_or_default();
    if !is_truncated(answer, id) {
        return parse_srv_answer(answer, id).map_err(|r| fail(r.to_string()));
    }
    tracing::debug!(%server, "SRV answer truncated over UDP; asking over TCP");
    let full = match tokio::time::timeout_at(deadline, query_tcp(server, &query)).await {
        Ok(Ok(full)) => full,
        Ok(Err(e)) => return Err(fail(format!("the UDP answer was truncated and TCP failed: {e}"))),
        Err(_) => return Err(late()),
    };
    parse_srv_answer(&full, id).map_err(|r| fail(r.to_string()))
}

/// The TC bit of an answer to the query with `id`: the server cut it to fit a datagram.
fn is_truncated(answer: &[u8], id: u16) -> bool {
    u16_at(answer, 0) == Ok(id) && u16_at(answer, 2).is_ok_and(|flags| flags & FLAG_TC != 0)
}

/// One query over TCP: a two-byte big-endian length, then the message, both ways.
async fn query_tcp(server: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let len = u16::try_from(query.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "query longer than 65535 bytes"))?;
    let mut stream = tokio::net::TcpStream::connect(server).await?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed).await?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    // At most 65535 bytes, by the width of the prefix: a hostile server cannot make
    // this allocate more.
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut answer).await?;
    Ok(answer)
}

const TYPE_SRV: u16 = 33;
/// Header flag: the message was truncated to fit the transport.
const FLAG_TC: u16 = 0x0200;

/// A standard query, recursion desired, one question `name IN SRV`.
pub fn srv_query(name: &str, id: u16) -> Result<Vec<u8>, &'static str> {
    let mut q = Vec::with_capacity(name.len() + 18);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("not a DNS name");
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&TYPE_SRV.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    Ok(q)
}

fn u16_at(buf: &[u8], at: usize) -> Result<u16, &'static str> {
    match buf.get(at..at + 2) {
        Some(b) => Ok(u16::from_be_bytes([b[0], b[1]])),
        None => Err("truncated answer"),
    }
}

/// Reads a possibly compressed name at `at`; returns it and the offset after it.
fn read_name(buf: &[u8], mut at: usize) -> Result<(String, usize), &'static str> {
    let mut labels: Vec<String> = Vec::new();
    let mut end = None;
    // Bounded: a pointer loop in a hostile answer must not spin for ever.
    for _ in 0..128 {
        let len = *buf.get(at).ok_or("truncated name")?;
        match len {
            0 => {
                return Ok((labels.join("."), end.unwrap_or(at + 1)));
            }
            l if l & 0xc0 == 0xc0 => {
                let ptr = usize::from(u16_at(buf, at)? & 0x3fff);
                end.get_or_insert(at + 2);
                at = ptr;
            }
            l if l & 0xc0 == 0 => {
                let l = usize::from(l);
                let label = buf.get(at + 1..at + 1 + l).ok_or("truncated label")?;
                labels.push(String::from_utf8_lossy(label).into_owned());
                at += 1 + l;
            }
            _ => return Err("bad label"),
        }
    }
    Err("name compression loop")
}

/// The SRV records of an answer to the query with `id`.
pub fn parse_srv_answer(buf: &[u8], id: u16) -> Result<Vec<SrvRecord>, &'static str> {
    if u16_at(buf, 0)? != id {
        return Err("the answer is for another query");
    }
    let flags = u16_at(buf, 2)?;
    match flags & 0x000f {
        0 => {}
        3 => return Err("no such name (NXDOMAIN)"),
        _ => return Err("the server failed the query"),
    }
    let questions = u16_at(buf, 4)?;
    let answers = u16_at(buf, 6)?;
    let mut at = 12;
    for _ in 0..questions {
        at = read_name(buf, at)?.1 + 4;
    }
    let mut out = Vec::new();
    for _ in 0..answers {
        let (_, after) = read_name(buf, at)?;
        let rtype = u16_at(buf, after)?;
        let rdlen = usize::from(u16_at(buf, after + 8)?);
        let rdata = after + 10;
        if buf.len() < rdata + rdlen {
            return Err("truncated record");
        }
        if rtype == TYPE_SRV {
            let (target, _) = read_name(buf, rdata + 6)?;
            out.push(SrvRecord {
                priority: u16_at(buf, rdata)?,
                weight: u16_at(buf, rdata + 2)?,
                port: u16_at(buf, rdata + 4)?,
                target,
            });
        }
        at = rdata + rdlen;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer as a DNS server would send it, with the target names compressed
    /// against the question.
    fn answer(id: u16, records: &[(u16, u16, u16, &str)]) -> Vec<u8> {
        let mut buf = srv_query("_parley._tcp.fleet.example", id).unwrap();
        buf[2] = 0x81;
        buf[3] = 0x80;
        buf[7] = records.len() as u8;
        for (prio, weight, port, host) in records {
            buf.extend_from_slice(&[0xc0, 12]); // the question's name
            buf.extend_from_slice(&TYPE_SRV.to_be_bytes());
            buf.extend_from_slice(&[0, 1, 0, 0, 0, 60]);
            let mut rdata = Vec::new();
            for v in [prio, weight, port] {
                rdata.extend_from_slice(&v.to_be_bytes());
            }
            rdata.push(host.len() as u8);
            rdata.extend_from_slice(host.as_bytes());
            rdata.extend_from_slice(&[0xc0, 12 + 8 + 5]); // "...fleet.example" from the question
            buf.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            buf.extend_from_slice(&rdata);
        }
        buf
    }

    #[test]
    fn srv_answers_map_to_agents() {
        let buf =
            answer(42, &[(20, 5, 7070, "edge-2"), (10, 5, 7070, "edge-1"), (10, 5, 7070, "edge-1"), (10, 0, 0, "x")]);
        let records = parse_srv_answer(&buf, 42).unwrap();
        assert_eq!(records.len(), 4);
        assert_eq!(records[1].target, "edge-1.fleet.example");
        let entries = srv_entries(&records);
        let endpoints: Vec<&str> = entries.iter().map(|e| e.endpoint.as_str()).collect();
        assert_eq!(endpoints, ["http://edge-1.fleet.example:7070", "http://edge-2.fleet.example:7070"]);
        assert_eq!(parse_srv_answer(&buf, 41), Err("the answer is for another query"));
        assert!(parse_srv_answer(&buf[..buf.len() - 3], 42).is_err());
        let mut nx = buf.clone();
        nx[3] = 0x83;
        assert_eq!(parse_srv_answer(&nx, 42), Err("no such name (NXDOMAIN)"));
    }

    #[test]
    fn hostile_answers_are_errors_not_hangs() {
        let mut looped = srv_query("a.b", 1).unwrap();
        looped[7] = 1;
        looped.extend_from_slice(&[0xc0, looped.len() as u8]);
        assert!(parse_srv_answer(&looped, 1).is_err());
        assert!(parse_srv_answer(&[], 1).is_err());
        assert!(srv_query("a..b", 1).is_err());
    }

    #[tokio::test]
    async fn looks_up_srv_records_from_a_dns_server() {
        let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        let responder = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let (_, from) = server.recv_from(&mut buf).await.unwrap();
            let id = u16::from_be_bytes([buf[0], buf[1]]);
            server.send_to(&answer(id, &[(10, 5, 7071, "core-1")]), from).await.unwrap();
        });
        let records = lookup_srv("_parley._tcp.fleet.example", addr, Duration::from_secs(2)).await.unwrap();
        assert_eq!(records, [SrvRecord { priority: 10, weight: 5, port: 7071, target: "core-1.fleet.example".into() }]);
        responder.await.unwrap();
    }

    /// A UDP socket and a TCP listener on the same loopback port, as a DNS server has.
    async fn dns_sockets() -> (tokio::net::UdpSocket, tokio::net::TcpListener) {
        for _ in 0..20 {
            let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let port = udp.local_addr().unwrap().port();
            if let Ok(tcp) = tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                return (udp, tcp);
            }
        }
        panic!("no loopback port free for both UDP and TCP");
    }

    /// The header-only answer a server sends when the records do not fit a datagram.
    fn truncated(query: &[u8]) -> Vec<u8> {
        let mut t = query.to_vec();
        t[2] = 0x83; // response, TC, recursion desired
        t[3] = 0x80;
        t
    }

    #[tokio::test]
    async fn a_truncated_udp_answer_is_asked_again_over_tcp() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (udp, tcp) = dns_sockets().await;
        let addr = udp.local_addr().unwrap();
        // 40 agents: about 1.3 kB of answer, more than the 512 bytes of plain DNS over UDP.
        let hosts: Vec<String> = (1..=40).map(|i| format!("edge-{i}")).collect();
        let records: Vec<(u16, u16, u16, &str)> = hosts.iter().map(|h| (10, 5, 7070, h.as_str())).collect();
        let full = answer(0, &records);
        assert!(full.len() > 512, "{}", full.len());
        let udp_side = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let (n, from) = udp.recv_from(&mut buf).await.unwrap();
            udp.send_to(&truncated(&buf[..n]), from).await.unwrap();
        });
        let tcp_side = tokio::spawn(async move {
            let (mut conn, _) = tcp.accept().await.unwrap();
            let mut len = [0u8; 2];
            conn.read_exact(&mut len).await.unwrap();
            let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
            conn.read_exact(&mut query).await.unwrap();
            let mut reply = full.clone();
            reply[..2].copy_from_slice(&query[..2]);
            conn.write_all(&(reply.len() as u16).to_be_bytes()).await.unwrap();
            conn.write_all(&reply).await.unwrap();
            query
        });
        let got = lookup_srv("_parley._tcp.fleet.example", addr, Duration::from_secs(2)).await.unwrap();
        udp_side.await.unwrap();
        let query = tcp_side.await.unwrap();
        assert_eq!(query[4..], srv_query("_parley._tcp.fleet.example", 0).unwrap()[4..], "the same question");
        assert_eq!(got.len(), 40);
        assert_eq!(got[0], SrvRecord { priority: 10, weight: 5, port: 7070, target: "edge-1.fleet.example".into() });
        assert_eq!(got[39].target, "edge-40.fleet.example");
        assert_eq!(srv_entries(&got).len(), 40);
    }

    #[tokio::test]
    async fn a_truncated_answer_the_server_will_not_give_over_tcp_is_an_error_that_says_so() {
        let (udp, tcp) = dns_sockets().await;
        let addr = udp.local_addr().unwrap();
        // The TCP side hangs up without an answer.
        tokio::spawn(async move {
            while let Ok((conn, _)) = tcp.accept().await {
                drop(conn);
            }
        });
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let (n, from) = udp.recv_from(&mut buf).await.unwrap();
            udp.send_to(&truncated(&buf[..n]), from).await.unwrap();
        });
        let err = lookup_srv("_parley._tcp.fleet.example", addr, Duration::from_secs(2)).await.unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(
                "DNS SRV lookup of _parley._tcp.fleet.example: the UDP answer was truncated and TCP failed: "
            ),
            "{text}"
        );
    }
}
