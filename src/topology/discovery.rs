//! Discovery beyond the inventory file: the registration endpoint (agents announce
//! themselves, see [`super::registration`]) and DNS SRV records (each target:port of
//! an SRV name is an agent at `http://target:port`). Both feed the same poller as the
//! inventory file, in any combination (docs/discovery.md).
//!
//! The SRV lookup goes through hickory-resolver configured as the system resolver
//! is (/etc/resolv.conf: search domains, every nameserver, timeout, attempts, ndots),
//! so `srv = "_parley._tcp"` finds `_parley._tcp.<search domain>` as `dig +search`
//! would, a dead first nameserver falls over to the next, and answers are cached for
//! their TTL. `[discovery] nameservers` replaces the nameservers only (for a
//! Consul-style DNS on another port), keeping the rest of the system's configuration.
//!
//! An agent whose record disappears is not shown down for ever: once its record has
//! been missing for `srv_grace_ms` (by default three lookups), it is dropped from the
//! fleet ([`Poller::drop_discovered`]). A lookup that fails (no nameserver answers) is
//! not taken for "no records": the agents already known are kept.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::inventory::InventoryEntry;
use super::poller::Poller;

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("the registration endpoint could not listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("DNS SRV lookup of {name}: {reason}")]
    Srv { name: String, reason: String },
    #[error("the DNS resolver could not be configured: {0}")]
    Resolver(String),
}

/// The `[discovery]` section: how agents other than the inventory's are found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoverySettings {
    /// Where the registration endpoint listens; none: agents cannot register.
    pub listen: Option<SocketAddr>,
    /// A DNS SRV name whose targets are agents, resolved periodically.
    pub srv_name: Option<String>,
    /// How often the SRV name is resolved (sooner when the records' TTL runs out sooner).
    pub srv_interval: Duration,
    /// Nameservers and the grace period of SRV discovery.
    pub srv: SrvSettings,
}

impl Default for DiscoverySettings {
    fn default() -> Self {
        DiscoverySettings {
            listen: None,
            srv_name: None,
            srv_interval: Duration::from_secs(30),
            srv: SrvSettings::default(),
        }
    }
}

impl DiscoverySettings {
    /// Whether agents come from registration or DNS (and not only from an inventory).
    pub fn finds_agents(&self) -> bool {
        self.listen.is_some() || self.srv_name.is_some()
    }
}

/// Starts what `settings` asks for; the tasks end when `stop` turns true. `token`:
/// the agents' bearer token; registrations are kept in `data_dir`.
pub async fn start(
    settings: &DiscoverySettings,
    token: Option<String>,
    data_dir: &std::path::Path,
    poller: &Arc<Poller>,
    stop: watch::Receiver<bool>,
) -> Result<Vec<JoinHandle<()>>, DiscoveryError> {
    let mut tasks = Vec::new();
    if let Some(addr) = settings.listen {
        let listener =
            tokio::net::TcpListener::bind(addr).await.map_err(|source| DiscoveryError::Bind { addr, source })?;
        tracing::info!(%addr, "registration endpoint listening");
        let mut stop = stop.clone();
        let poller = Arc::clone(poller);
        // Bindings (names, endpoints, credential hashes) outlive a restart of Parley.
        let options = super::registration::RegistrationOptions {
            token,
            bindings_file: Some(data_dir.join("registrations.json")),
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
    if let Some(name) = settings.srv_name.clone() {
        let resolver = SrvResolver::system(&settings.srv.nameservers)?;
        let poller = Arc::clone(poller);
        let interval = settings.srv_interval;
        let grace = settings.srv.grace.unwrap_or(interval * 3);
        let mut stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut members = SrvMembers::new(grace);
            loop {
                let next = srv_pass(&resolver, &name, &mut members, &poller, interval).await;
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    _ = tokio::time::sleep(next) => {}
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

/// The `[discovery]` keys for DNS beyond the name and interval.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SrvSettings {
    /// Nameservers replacing those of /etc/resolv.conf (search domains and options
    /// stay the system's); empty: the system's.
    pub nameservers: Vec<SocketAddr>,
    /// How long a record may be missing before its agent is dropped; `None`: three
    /// SRV intervals.
    pub grace: Option<Duration>,
}

impl SrvSettings {
    /// `ip`, `ip:port` or `[ipv6]:port`; port 53 when none is given.
    pub fn parse_nameserver(text: &str) -> Result<SocketAddr, String> {
        let t = text.trim();
        if let Ok(addr) = t.parse::<SocketAddr>() {
            return Ok(addr);
        }
        t.parse::<std::net::IpAddr>()
            .map(|ip| SocketAddr::new(ip, 53))
            .map_err(|_| format!("discovery.nameservers: `{text}` is not an address like 10.0.0.2 or 127.0.0.1:8600"))
    }
}

/// A resolver for SRV names, configured as the system's.
#[derive(Clone)]
pub struct SrvResolver {
    resolver: hickory_resolver::TokioResolver,
}

/// One lookup's answer: the records and how long they may be cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvAnswer {
    pub records: Vec<SrvRecord>,
    /// Until the first record expires; zero when there are none.
    pub ttl: Duration,
}

impl SrvResolver {
    /// From /etc/resolv.conf, with `nameservers` (when any) in place of its own.
    pub fn system(nameservers: &[SocketAddr]) -> Result<SrvResolver, DiscoveryError> {
        let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        SrvResolver::from_resolv_conf(&text, nameservers)
    }

    /// From the text of a resolv.conf, with `nameservers` (when any) in place of its own.
    pub fn from_resolv_conf(text: &str, nameservers: &[SocketAddr]) -> Result<SrvResolver, DiscoveryError> {
        use hickory_resolver::config::{ConnectionConfig, NameServerConfig};
        let fail = |reason: String| DiscoveryError::Resolver(reason);
        // hickory refuses a resolv.conf without nameservers; the overrides supply them.
        let text = if nameservers.is_empty() { text.to_string() } else { format!("{text}\nnameserver 127.0.0.1\n") };
        let (mut config, options) =
            hickory_resolver::system_conf::parse_resolv_conf(text.as_bytes()).map_err(|e| fail(e.to_string()))?;
        if !nameservers.is_empty() {
            config.name_servers = nameservers
                .iter()
                .map(|addr| {
                    let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
                    ns.connections = vec![ConnectionConfig::udp(), ConnectionConfig::tcp()]
                        .into_iter()
                        .map(|mut c| {
                            c.port = addr.port();
                            c
                        })
                        .collect();
                    ns
                })
                .collect();
        }
        let resolver = hickory_resolver::Resolver::builder_with_config(
            config,
            hickory_resolver::net::runtime::TokioRuntimeProvider::default(),
        )
        .with_options(options)
        .build()
        .map_err(|e| fail(e.to_string()))?;
        Ok(SrvResolver { resolver })
    }

    /// The SRV records of `name` (search domains applied as the system applies them).
    /// No such name, or a name without SRV records, is an empty answer; no answer at
    /// all is an error.
    pub async fn lookup(&self, name: &str) -> Result<SrvAnswer, DiscoveryError> {
        use hickory_resolver::proto::rr::RData;
        let fail = |reason: String| DiscoveryError::Srv { name: name.to_string(), reason };
        match self.resolver.srv_lookup(name).await {
            Ok(lookup) => {
                let records = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::SRV(srv) => Some(SrvRecord {
                            priority: srv.priority,
                            weight: srv.weight,
                            port: srv.port,
                            target: srv.target.to_utf8().trim_end_matches('.').to_string(),
                        }),
                        _ => None,
                    })
                    .collect();
                let ttl = lookup.valid_until().saturating_duration_since(std::time::Instant::now());
                Ok(SrvAnswer { records, ttl })
            }
            Err(e) if e.is_nx_domain() || e.is_no_records_found() => {
                Ok(SrvAnswer { records: Vec::new(), ttl: Duration::ZERO })
            }
            Err(e) => Err(fail(e.to_string())),
        }
    }
}

/// The agents SRV discovery added, and when each was last in an answer.
#[derive(Debug)]
pub struct SrvMembers {
    grace: Duration,
    last_seen: std::collections::HashMap<String, std::time::Instant>,
}

/// What one answer changes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SrvChange {
    /// In the answer and not known before.
    pub added: Vec<InventoryEntry>,
    /// Missing from every answer for longer than the grace period.
    pub dropped: Vec<String>,
}

impl SrvMembers {
    pub fn new(grace: Duration) -> SrvMembers {
        SrvMembers { grace, last_seen: Default::default() }
    }

    /// Takes in an answer seen at `now`. `known` says whether the poller already had
    /// an endpoint from elsewhere (the inventory file): those are not ours to drop.
    pub fn observe(
        &mut self,
        entries: &[InventoryEntry],
        now: std::time::Instant,
        mut add: impl FnMut(&InventoryEntry) -> bool,
    ) -> SrvChange {
        let mut change = SrvChange::default();
        for e in entries {
            let key = e.endpoint.to_ascii_lowercase();
            if let Some(seen) = self.last_seen.get_mut(&key) {
                *seen = now;
            } else if add(e) {
                self.last_seen.insert(key, now);
                change.added.push(e.clone());
            }
        }
        let grace = self.grace;
        let mut gone: Vec<String> = self
            .last_seen
            .iter()
            .filter(|(_, seen)| now.saturating_duration_since(**seen) > grace)
            .map(|(k, _)| k.clone())
            .collect();
        gone.sort();
        for k in &gone {
            self.last_seen.remove(k);
        }
        change.dropped = gone;
        change
    }

    pub fn len(&self) -> usize {
        self.last_seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last_seen.is_empty()
    }
}

/// One lookup and what it changes in the poller; answers how long to wait for the
/// next: the interval, or sooner when the records expire sooner (at least a second).
pub async fn srv_pass(
    resolver: &SrvResolver,
    name: &str,
    members: &mut SrvMembers,
    poller: &Poller,
    interval: Duration,
) -> Duration {
    match resolver.lookup(name).await {
        Ok(answer) => {
            let entries = srv_entries(&answer.records);
            let change = members.observe(&entries, std::time::Instant::now(), |e| poller.add_entry(e.clone()));
            for endpoint in &change.dropped {
                poller.drop_discovered(endpoint);
            }
            tracing::info!(
                %name,
                records = answer.records.len(),
                added = change.added.len(),
                dropped = change.dropped.len(),
                "SRV discovery"
            );
            if answer.ttl.is_zero() {
                interval
            } else {
                interval.min(answer.ttl).max(Duration::from_secs(1))
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "SRV discovery failed; keeping the agents already known");
            interval
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    use hickory_resolver::proto::op::{Message, ResponseCode};
    use hickory_resolver::proto::rr::rdata::SRV;
    use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};

    /// Name -> SRV records (priority, weight, port, target).
    type Zone = Arc<Mutex<std::collections::HashMap<String, Vec<(u16, u16, u16, String)>>>>;

    /// A DNS server on loopback UDP speaking the real protocol (messages encoded and
    /// decoded by hickory-proto): it answers SRV questions for the names in its zone
    /// with the records there now, NXDOMAIN for anything else, and counts questions.
    struct DnsServer {
        addr: SocketAddr,
        zone: Zone,
        ttl: Arc<Mutex<u32>>,
        asked: Arc<Mutex<Vec<String>>>,
    }

    impl DnsServer {
        async fn start() -> DnsServer {
            let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let addr = socket.local_addr().unwrap();
            let zone: Zone = Arc::default();
            let ttl = Arc::new(Mutex::new(300));
            let asked: Arc<Mutex<Vec<String>>> = Arc::default();
            let (z, t, a) = (Arc::clone(&zone), Arc::clone(&ttl), Arc::clone(&asked));
            tokio::spawn(async move {
                let mut buf = [0u8; 1500];
                while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                    let Ok(query) = Message::from_vec(&buf[..n]) else { continue };
                    let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
                    reply.metadata.recursion_desired = query.metadata.recursion_desired;
                    reply.metadata.recursion_available = true;
                    reply.metadata.authoritative = true;
                    reply.add_queries(query.queries.clone());
                    if let Some(q) = query.queries.first() {
                        let name = q.name().to_ascii().to_ascii_lowercase();
                        a.lock().unwrap().push(name.clone());
                        let records = z.lock().unwrap().get(&name).cloned();
                        let ttl = *t.lock().unwrap();
                        match records {
                            Some(records) if q.query_type() == RecordType::SRV => {
                                for (prio, weight, port, target) in records {
                                    let target = Name::from_ascii(&target).unwrap();
                                    let rdata = RData::SRV(SRV::new(prio, weight, port, target));
                                    reply.add_answer(Record::from_rdata(q.name().clone(), ttl, rdata));
                                }
                            }
                            Some(_) => {}
                            None => reply.metadata.response_code = ResponseCode::NXDomain,
                        }
                    }
                    let _ = socket.send_to(&reply.to_vec().unwrap(), from).await;
                }
            });
            DnsServer { addr, zone, ttl, asked }
        }

        fn set(&self, name: &str, records: &[(u16, u16, u16, &str)]) {
            let records = records.iter().map(|(p, w, port, t)| (*p, *w, *port, t.to_string())).collect();
            self.zone.lock().unwrap().insert(name.to_string(), records);
        }

        fn asked(&self) -> Vec<String> {
            self.asked.lock().unwrap().clone()
        }
    }

    /// A loopback UDP port nobody answers on (bound, then dropped).
    fn dead_port() -> SocketAddr {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    }

    #[test]
    fn srv_answers_map_to_agents_in_priority_order_without_duplicates() {
        let r = |priority, weight, port, target: &str| SrvRecord { priority, weight, port, target: target.into() };
        let records = [
            r(20, 5, 7070, "edge-2.fleet.example"),
            r(10, 5, 7070, "edge-1.fleet.example"),
            r(10, 5, 7070, "edge-1.fleet.example"),
            r(10, 0, 0, "x"),
        ];
        let endpoints: Vec<String> = srv_entries(&records).into_iter().map(|e| e.endpoint).collect();
        assert_eq!(endpoints, ["http://edge-1.fleet.example:7070", "http://edge-2.fleet.example:7070"]);
    }

    #[test]
    fn nameservers_parse_with_or_without_a_port() {
        assert_eq!(SrvSettings::parse_nameserver("10.0.0.2").unwrap(), "10.0.0.2:53".parse().unwrap());
        assert_eq!(SrvSettings::parse_nameserver("127.0.0.1:8600").unwrap(), "127.0.0.1:8600".parse().unwrap());
        assert_eq!(SrvSettings::parse_nameserver("[::1]:5353").unwrap(), "[::1]:5353".parse().unwrap());
        assert_eq!(
            SrvSettings::parse_nameserver("dns.example").unwrap_err(),
            "discovery.nameservers: `dns.example` is not an address like 10.0.0.2 or 127.0.0.1:8600"
        );
    }

    #[tokio::test]
    async fn search_domains_and_every_nameserver_are_used_as_the_system_does() {
        let dns = DnsServer::start().await;
        dns.set(
            "_parley._tcp.fleet.test.",
            &[(10, 5, 7071, "core-1.fleet.test."), (20, 5, 7072, "core-2.fleet.test.")],
        );
        // The first nameserver is dead; the second answers. The short name is found
        // through the search domain, as `dig +search` finds it.
        let conf = "search other.test fleet.test\noptions timeout:1 attempts:2\n";
        let resolver = SrvResolver::from_resolv_conf(conf, &[dead_port(), dns.addr]).unwrap();
        let answer = resolver.lookup("_parley._tcp").await.unwrap();
        assert_eq!(
            answer.records,
            [
                SrvRecord { priority: 10, weight: 5, port: 7071, target: "core-1.fleet.test".into() },
                SrvRecord { priority: 20, weight: 5, port: 7072, target: "core-2.fleet.test".into() },
            ]
        );
        assert!(answer.ttl > Duration::from_secs(290) && answer.ttl <= Duration::from_secs(300), "{:?}", answer.ttl);
        let asked = dns.asked();
        assert!(asked.contains(&"_parley._tcp.other.test.".to_string()), "{asked:?}");
        assert_eq!(asked.last().map(String::as_str), Some("_parley._tcp.fleet.test."), "{asked:?}");

        // Within the TTL the answer comes from the cache: the server is not asked again.
        let before = dns.asked().len();
        dns.set("_parley._tcp.fleet.test.", &[]);
        assert_eq!(resolver.lookup("_parley._tcp.fleet.test.").await.unwrap().records.len(), 2);
        assert_eq!(dns.asked().len(), before);

        // A name that does not exist is an empty answer, not an error.
        let none = resolver.lookup("_nothing._tcp.fleet.test.").await.unwrap();
        assert_eq!(none, SrvAnswer { records: Vec::new(), ttl: Duration::ZERO });
    }

    #[tokio::test]
    async fn no_nameserver_answering_is_an_error_within_the_configured_timeout() {
        let resolver = SrvResolver::from_resolv_conf("options timeout:1 attempts:1\n", &[dead_port()]).unwrap();
        let started = std::time::Instant::now();
        let err = resolver.lookup("_parley._tcp.fleet.test.").await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
        assert!(err.to_string().starts_with("DNS SRV lookup of _parley._tcp.fleet.test.: "), "{err}");
    }

    #[tokio::test]
    async fn agents_whose_records_disappear_are_dropped_after_the_grace_period() {
        use crate::agent::AgentClient;
        use crate::topology::poller::PollerConfig;
        use crate::topology::Catalog;
        let dns = DnsServer::start().await;
        *dns.ttl.lock().unwrap() = 1;
        let name = "_parley._tcp.fleet.test.";
        dns.set(name, &[(10, 5, 7071, "edge-1.fleet.test."), (10, 5, 7072, "edge-2.fleet.test.")]);
        let resolver = SrvResolver::from_resolv_conf("options timeout:1\n", &[dns.addr]).unwrap();
        let client = AgentClient::new(Duration::from_millis(200), None).unwrap();
        // edge-9 comes from the inventory file: SRV discovery never drops it.
        let file_entry =
            InventoryEntry { endpoint: "http://edge-9.fleet.test:7079".into(), name: None, region: None, zone: None };
        let poller =
            Poller::new(vec![file_entry], client, Arc::new(Catalog::embedded().unwrap()), PollerConfig::default());
        let mut events = poller.events();
        let endpoints = |p: &Poller| p.inventory().iter().map(|e| e.endpoint.clone()).collect::<Vec<_>>();
        let mut members = SrvMembers::new(Duration::from_millis(1500));
        let interval = Duration::from_secs(30);

        let next = srv_pass(&resolver, name, &mut members, &poller, interval).await;
        assert_eq!(next, Duration::from_secs(1), "the next lookup is when the records expire");
        assert_eq!(
            endpoints(&poller),
            ["http://edge-9.fleet.test:7079", "http://edge-1.fleet.test:7071", "http://edge-2.fleet.test:7072"]
        );
        // edge-2's record goes, and so does edge-9's (which was never SRV's to drop).
        dns.set(name, &[(10, 5, 7071, "edge-1.fleet.test.")]);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        srv_pass(&resolver, name, &mut members, &poller, interval).await;
        assert_eq!(endpoints(&poller).len(), 3, "within the grace period edge-2 stays");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        srv_pass(&resolver, name, &mut members, &poller, interval).await;
        assert_eq!(endpoints(&poller), ["http://edge-9.fleet.test:7079", "http://edge-1.fleet.test:7071"]);
        assert_eq!(members.len(), 1);
        let left = events.try_recv().unwrap();
        assert!(matches!(left, crate::topology::poller::TopologyEvent::Left { .. }), "{left:?}");

        // A lookup that fails (the server gone) drops nobody, however long it lasts.
        let silent = SrvResolver::from_resolv_conf("options timeout:1 attempts:1\n", &[dead_port()]).unwrap();
        tokio::time::sleep(Duration::from_millis(1600)).await;
        srv_pass(&silent, name, &mut members, &poller, interval).await;
        assert_eq!(endpoints(&poller).len(), 2);
        // And the record coming back brings the agent back.
        dns.set(name, &[(10, 5, 7071, "edge-1.fleet.test."), (10, 5, 7072, "edge-2.fleet.test.")]);
        srv_pass(&resolver, name, &mut members, &poller, interval).await;
        assert_eq!(endpoints(&poller).len(), 3);
    }
}
