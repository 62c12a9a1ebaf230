//! What a real agent runs and measures for one active extension version: its
//! supervised service process (own working directory, own log file, restarted with
//! backoff when it dies, stopped with SIGTERM then SIGKILL), its health probe on an
//! interval, and the process's CPU and memory read from `/proc`.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::artifact::manifest::{Health, Probe};

/// How many probe results make the window that error rate and p95 are taken over.
pub const PROBE_WINDOW: usize = 20;

/// One probe's result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeResult {
    pub ok: bool,
    pub ms: f64,
}

/// The last [`PROBE_WINDOW`] probe results of one active version.
#[derive(Debug, Default)]
pub struct ProbeWindow {
    results: Mutex<VecDeque<ProbeResult>>,
    /// Every probe since the version was activated: (passed, failed).
    totals: Mutex<(u64, u64)>,
}

impl ProbeWindow {
    pub fn push(&self, r: ProbeResult) {
        {
            let mut t = self.totals.lock().unwrap_or_else(|p| p.into_inner());
            if r.ok {
                t.0 += 1;
            } else {
                t.1 += 1;
            }
        }
        let mut q = self.results.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() == PROBE_WINDOW {
            q.pop_front();
        }
        q.push_back(r);
    }

    /// Probes since activation that passed and that failed.
    pub fn totals(&self) -> (u64, u64) {
        *self.totals.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn snapshot(&self) -> Vec<ProbeResult> {
        self.results.lock().unwrap_or_else(|p| p.into_inner()).iter().copied().collect()
    }
}

/// Runs a probe once. Never panics, never waits longer than the probe's timeout.
pub async fn probe_once(http: &reqwest::Client, health: &Health, dir: &Path, port: Option<u16>) -> ProbeResult {
    let started = Instant::now();
    let ok = match &health.probe {
        Probe::Http(url) => {
            let url = substitute(url, port);
            matches!(
                tokio::time::timeout(health.timeout, http.get(&url).timeout(health.timeout).send()).await,
                Ok(Ok(resp)) if resp.status().is_success()
            )
        }
        Probe::Command(cmd) => {
            let mut c = tokio::process::Command::new("sh");
            c.arg("-c").arg(cmd).current_dir(dir).kill_on_drop(true);
            c.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null());
            c.stderr(std::process::Stdio::null());
            if let Some(p) = port {
                c.env("PORT", p.to_string());
            }
            die_with_agent(&mut c);
            match c.spawn() {
                Ok(mut child) => {
                    let pid = child.id();
                    match tokio::time::timeout(health.timeout, child.wait()).await {
                        Ok(Ok(s)) => s.success(),
                        Ok(Err(_)) => false,
                        Err(_) => {
                            // Past its timeout: the probe and whatever it started.
                            kill_group(pid);
                            let _ = child.wait().await;
                            false
                        }
                    }
                }
                Err(_) => false,
            }
        }
    };
    ProbeResult { ok, ms: started.elapsed().as_secs_f64() * 1000.0 }
}

/// `${PORT}` replaced by the service's port (left alone when there is none).
pub fn substitute(text: &str, port: Option<u16>) -> String {
    match port {
        Some(p) => text.replace("${PORT}", &p.to_string()),
        None => text.to_string(),
    }
}

/// Probes on the health's interval into `window` until dropped.
pub fn spawn_prober(
    http: reqwest::Client,
    health: Health,
    dir: PathBuf,
    port: Option<u16>,
    window: Arc<ProbeWindow>,
) -> AbortOnDrop {
    AbortOnDrop(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(health.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate, but activation already probed once.
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let r = probe_once(&http, &health, &dir, port).await;
            window.push(r);
        }
    }))
}

/// Aborts its task when dropped, so nothing outlives the version it worked for.
#[derive(Debug)]
pub struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl AbortOnDrop {
    pub fn spawn(f: impl std::future::Future<Output = ()> + Send + 'static) -> AbortOnDrop {
        AbortOnDrop(tokio::spawn(f))
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A supervised service: the task that (re)starts it and the pid of the process now.
#[derive(Debug)]
pub struct Supervised {
    stop: tokio::sync::watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
    pid: Arc<AtomicU32>,
    pub port: u16,
    pub log: PathBuf,
}

/// First wait before a restart; doubled after each quick death, up to the maximum.
const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A process that ran this long is healthy again: the backoff starts over.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// How long a stopped service gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);

impl Supervised {
    /// Starts `argv` in `dir` with `PORT` set, output appended to `log`, and keeps it
    /// running until [`Supervised::stop`].
    pub fn start(argv: Vec<String>, dir: PathBuf, log: PathBuf, port: u16) -> Supervised {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let pid = Arc::new(AtomicU32::new(0));
        let pid_for_task = Arc::clone(&pid);
        let log_for_task = log.clone();
        // The first process is started here, not in the task, so its pid is known
        // before `start` returns: a caller checking at once sees it running.
        let mut first = Some(spawn_child(&argv, &dir, &log, port));
        if let Some(Ok(c)) = &first {
            pid.store(c.id().unwrap_or(0), Ordering::SeqCst);
        }
        let task = tokio::spawn(async move {
            let mut backoff = BACKOFF_START;
            loop {
                let started = Instant::now();
                let spawned = match first.take() {
                    Some(r) => r,
                    None => spawn_child(&argv, &dir, &log_for_task, port),
                };
                let mut child = match spawned {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!(dir = %dir.display(), error = %e, "the service could not be started");
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = stopped.changed() => return,
                        }
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        continue;
                    }
                };
                let id = child.id().unwrap_or(0);
                pid_for_task.store(id, Ordering::SeqCst);
                tracing::info!(dir = %dir.display(), pid = id, port, "service started");
                tokio::select! {
                    status = child.wait() => {
                        pid_for_task.store(0, Ordering::SeqCst);
                        tracing::warn!(dir = %dir.display(), pid = id, status = ?status.ok(), "service exited; restarting");
                        if started.elapsed() >= STABLE_AFTER {
                            backoff = BACKOFF_START;
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = stopped.changed() => return,
                        }
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                    _ = stopped.changed() => {
                        terminate(&mut child, id).await;
                        pid_for_task.store(0, Ordering::SeqCst);
                        tracing::info!(dir = %dir.display(), pid = id, "service stopped");
                        return;
                    }
                }
            }
        });
        Supervised { stop, task: Some(task), pid, port, log }
    }

    /// The service's process id now, if it is running.
    pub fn pid(&self) -> Option<u32> {
        Some(self.pid.load(Ordering::SeqCst)).filter(|p| *p != 0)
    }

    /// Stops the service and waits until its process is gone.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        // A service dropped without `stop` (the agent shutting down) is still told to go.
        let _ = self.stop.send(true);
    }
}

fn spawn_child(argv: &[String], dir: &Path, log: &Path, port: u16) -> std::io::Result<tokio::process::Child> {
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    let err = out.try_clone()?;
    let argv: Vec<String> = argv.iter().map(|a| substitute(a, Some(port))).collect();
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]).current_dir(dir).env("PORT", port.to_string());
    cmd.stdin(std::process::Stdio::null()).stdout(out).stderr(err);
    #[cfg(target_os = "linux")]
    unsafe {
        // Its own process group (so a stop reaches its children), and a SIGTERM when
        // the agent dies, even by SIGKILL: no service outlives its agent.
        cmd.pre_exec(|| {
            if libc::setpgid(0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Makes `cmd` (a hook, a probe command: a shell that may start processes of its own)
/// end, with everything it started, when the agent dies, even by SIGKILL.
///
/// `PR_SET_PDEATHSIG` alone reaches only the process it is set on, not what that shell
/// forks, so the spawned process is a guard: in its own process group, it forks the
/// command (which dies with the guard), waits for it and exits as it did; when the
/// agent goes first (the guard's parent changes) it kills the whole group, itself
/// included. A caller's timeout kills the group too: `kill(-pid)` with the pid the
/// agent sees, which is the group's id.
pub fn die_with_agent(cmd: &mut tokio::process::Command) {
    #[cfg(target_os = "linux")]
    {
        let agent = std::process::id() as libc::pid_t;
        // SAFETY: the closure runs between fork and exec and calls only
        // async-signal-safe functions (setpgid, fork, prctl, waitpid, getppid, kill,
        // close, nanosleep, _exit); it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setpgid(0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let command = libc::fork();
                if command < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if command == 0 {
                    // The command: it goes on to exec, and dies with its guard.
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    return Ok(());
                }
                guard(command, agent)
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    cmd.process_group(0);
}

/// The guard's life (see [`die_with_agent`]); never returns.
#[cfg(target_os = "linux")]
fn guard(command: libc::pid_t, agent: libc::pid_t) -> ! {
    // SAFETY: only async-signal-safe calls, in the child of a fork.
    unsafe {
        // Its copies of the agent's descriptors closed, the spawn's exec-status pipe
        // among them (the agent then sees the spawn succeed); stdio stays for the log.
        if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) != 0 {
            for fd in 3..4096 {
                libc::close(fd);
            }
        }
        let mut nap_ms = 1;
        loop {
            let mut status = 0;
            let r = libc::waitpid(command, &mut status, libc::WNOHANG);
            if r == command {
                if libc::WIFEXITED(status) {
                    libc::_exit(libc::WEXITSTATUS(status));
                }
                // Killed by a signal: end by the same one, so the agent sees it.
                let sig = libc::WTERMSIG(status);
                libc::signal(sig, libc::SIG_DFL);
                libc::kill(libc::getpid(), sig);
                libc::_exit(128 + sig);
            }
            if r < 0 && *libc::__errno_location() != libc::EINTR {
                libc::_exit(127);
            }
            if libc::getppid() != agent {
                // The agent is gone: everything in the group goes, the guard last.
                libc::kill(0, libc::SIGKILL);
                libc::_exit(137);
            }
            let nap = libc::timespec { tv_sec: 0, tv_nsec: nap_ms * 1_000_000 };
            libc::nanosleep(&nap, std::ptr::null_mut());
            nap_ms = (nap_ms * 2).min(50);
        }
    }
}

/// Kills the process group `pid` leads (a command started by [`die_with_agent`]).
pub fn kill_group(pid: Option<u32>) {
    #[cfg(unix)]
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()).filter(|p| *p > 0) {
        // SAFETY: a plain syscall; a group already gone is ESRCH, which is fine.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}

async fn terminate(child: &mut tokio::process::Child, pid: u32) {
    #[cfg(unix)]
    if let Ok(pid) = i32::try_from(pid) {
        if pid > 0 {
            // The whole group: a shell wrapper's children too.
            unsafe {
                libc::kill(-pid, libc::SIGTERM);
            }
        }
    }
    if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_err() {
        #[cfg(unix)]
        if let Ok(pid) = i32::try_from(pid) {
            if pid > 0 {
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                }
            }
        }
        let _ = child.kill().await;
    }
}

/// A free loopback port for a service (bound and released; the service binds it next).
pub fn free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// CPU time and resident memory of processes, from `/proc`.
#[derive(Debug, Default)]
pub struct ProcSampler {
    /// pid -> the last sample, for rates between two reads.
    last: Mutex<std::collections::HashMap<u32, Sample>>,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    ticks: u64,
    at: Instant,
    /// Cores' worth of CPU between this sample and the one before.
    rate: f64,
}

/// Rates are taken over at least this long: CPU time moves in clock ticks (10 ms), so
/// two reads a few milliseconds apart would make one tick look like a busy core.
const MIN_SAMPLE_SPAN: Duration = Duration::from_secs(1);

/// What `/proc` says about a set of processes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcUsage {
    /// Percent of the host's total CPU (all cores).
    pub cpu_pct: f64,
    /// Resident memory, percent of the host's total.
    pub mem_pct: f64,
}

impl ProcSampler {
    /// Usage of `pids` together; `None` when none of them can be read.
    pub fn usage(&self, pids: &[u32]) -> Option<ProcUsage> {
        let ticks_per_sec = clock_ticks();
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
        let mem_total = mem_total_bytes()?;
        let page = page_size();
        let boot_uptime = uptime_secs();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let (mut cpu, mut rss, mut seen) = (0.0, 0.0, 0);
        for &pid in pids {
            let Some((ticks, start_ticks)) = read_stat(pid) else { continue };
            let Some(pages) = read_statm_rss(pid) else { continue };
            seen += 1;
            rss += (pages * page) as f64;
            let rate = match last.get(&pid) {
                Some(prev) if now.duration_since(prev.at) < MIN_SAMPLE_SPAN => {
                    cpu += prev.rate;
                    continue;
                }
                Some(prev) if ticks >= prev.ticks => {
                    (ticks - prev.ticks) as f64 / ticks_per_sec / now.duration_since(prev.at).as_secs_f64()
                }
                // First look: the average since the process started.
                _ => match boot_uptime {
                    Some(up) => {
                        let age = up - start_ticks as f64 / ticks_per_sec;
                        if age > 0.0 {
                            ticks as f64 / ticks_per_sec / age
                        } else {
                            0.0
                        }
                    }
                    None => 0.0,
                },
            };
            cpu += rate;
            last.insert(pid, Sample { ticks, at: now, rate });
        }
        last.retain(|pid, _| pids.contains(pid));
        if seen == 0 {
            return None;
        }
        Some(ProcUsage {
            cpu_pct: (cpu / cores * 100.0).clamp(0.0, 100.0),
            mem_pct: (rss / mem_total as f64 * 100.0).clamp(0.0, 100.0),
        })
    }
}

/// (utime + stime, starttime) in clock ticks.
fn read_stat(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: fields start after it.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3 of stat(5), so index = field - 3.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let start: u64 = f.get(19)?.parse().ok()?;
    Some((utime + stime, start))
}

fn read_statm_rss(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    text.split_whitespace().nth(1)?.parse().ok()
}

fn mem_total_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn uptime_secs() -> Option<f64> {
    std::fs::read_to_string("/proc/uptime").ok()?.split_whitespace().next()?.parse().ok()
}

fn clock_ticks() -> f64 {
    #[cfg(unix)]
    {
        let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        if t > 0 {
            return t as f64;
        }
    }
    100.0
}

fn page_size() -> u64 {
    #[cfg(unix)]
    {
        let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if p > 0 {
            return p as u64;
        }
    }
    4096
}

/// The agent's own resident memory, bytes (for the benchmark and `/proc` readers).
pub fn self_rss_bytes() -> Option<u64> {
    read_statm_rss(std::process::id()).map(|pages| pages * page_size())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_memory_and_a_cpu_share() {
        let s = ProcSampler::default();
        let u = s.usage(&[std::process::id()]).unwrap();
        assert!(u.mem_pct > 0.0 && u.mem_pct < 100.0, "{u:?}");
        assert!(u.cpu_pct >= 0.0, "{u:?}");
        assert_eq!(s.usage(&[u32::MAX - 1]), None);
    }
}
