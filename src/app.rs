//! Start-up and shutdown: turns a [`Config`] into running services (fleet, poller,
//! registry, orchestrator, grammar) that every front-end shares, and hands out
//! dialog sessions.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::agent::demo::{DemoFleet, DemoOptions};
use crate::agent::faults::FaultSpec;
use crate::agent::AgentClient;
use crate::config::{Config, FleetSource};
use crate::dialog::Session;
use crate::intent::Grammar;
use crate::ops::Actor;
use crate::orchestrate::{Orchestrator, RolloutSettings};
use crate::registry::{DeploymentRecord, Registry};
pub use crate::services::Services;
use crate::topology::inventory::{Inventory, InventoryEntry};
use crate::topology::poller::{Poller, PollerConfig};
use crate::topology::{Catalog, HealthThresholds};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Intents(#[from] crate::intent::IntentError),
    #[error(transparent)]
    Topology(#[from] crate::topology::TopologyError),
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
    #[error(transparent)]
    Orchestrate(#[from] crate::orchestrate::OrchestrateError),
    #[error(transparent)]
    Agent(#[from] crate::agent::AgentError),
    #[error(transparent)]
    Demo(#[from] crate::agent::demo::DemoError),
    #[error(transparent)]
    Faults(#[from] crate::agent::faults::FaultSpecError),
    #[error(transparent)]
    Llm(#[from] crate::llm::LlmError),
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error(transparent)]
    Routing(#[from] crate::routing::RoutingError),
    #[error(transparent)]
    Discovery(#[from] crate::topology::discovery::DiscoveryError),
    #[error(transparent)]
    Metrics(#[from] crate::analysis::PromError),
}

/// A running Parley.
pub struct Parley {
    services: Arc<Services>,
    /// Deployments a previous process left unfinished (now paused).
    interrupted: Vec<DeploymentRecord>,
    demo: Option<DemoFleet>,
    /// Where this process advertised its demo fleet to other Parley processes.
    advertised: Option<std::path::PathBuf>,
    stop: watch::Sender<bool>,
    poll_task: JoinHandle<()>,
    refresher: JoinHandle<()>,
    /// Registration endpoint and SRV resolver, when configured.
    discovery: Vec<JoinHandle<()>>,
}

/// The extension catalog `config` names (`--catalog`), or the embedded one: what the
/// server's poller uses, and what a client front-end rebuilds the server's snapshot with.
pub fn load_catalog(config: &Config) -> Result<Catalog, StartError> {
    Ok(match &config.catalog {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| StartError::File { path: path.display().to_string(), reason: e.to_string() })?;
            Catalog::from_toml(&text, &path.display().to_string())?.relative_to(path.parent())
        }
        None => Catalog::embedded()?,
    })
}

impl Parley {
    pub async fn start(config: &Config) -> Result<Parley, StartError> {
        let grammar = match &config.intents_dir {
            Some(dir) => Grammar::load_dir(dir)?,
            None => Grammar::embedded()?,
        };
        let llm = config.llm.as_ref().map(crate::llm::Llm::new).transpose()?;
        let catalog = Arc::new(load_catalog(config)?);
        // The poller keeps `poll_concurrency` requests in flight, so that many keep-alive
        // connections per host are worth keeping (many agents may share one address).
        let client =
            AgentClient::with_idle_per_host(config.agent_timeout, config.agent_token.clone(), config.poll.concurrency)?
                .with_artifacts(&catalog)
                .with_install_timeout(config.install_timeout);
        let anonymous = AgentClient::new(config.agent_timeout, None)?;

        let (inventory, demo, advertised) = match &config.fleet {
            FleetSource::Inventory(path) => (Inventory::load(path)?, None, None),
            // Agents that register or are found by SRV are the fleet: no demo beside them.
            FleetSource::Demo { .. } if config.discovery.finds_agents() => (Vec::new(), None, None),
            FleetSource::Demo { faults } => start_demo(config, faults, &client).await?,
        };

        let thresholds = HealthThresholds::default();
        let poller =
            Arc::new(Poller::new(inventory, client.clone(), catalog, PollerConfig { thresholds, ..config.poll }));
        poller.refresh().await;
        let (stop, stop_rx) = watch::channel(false);
        let poll_task = Arc::clone(&poller).spawn(stop_rx);
        let discovery = crate::topology::discovery::start(
            &config.discovery,
            config.agent_token.clone(),
            &config.data_dir,
            &poller,
            stop.subscribe(),
        )
        .await?;

        let registry = Registry::connect(&config.registry_location()).await?;
        let settings =
            RolloutSettings { gate: thresholds, install_timeout: config.install_timeout, ..config.rollout.clone() };
        let orchestrator = Orchestrator::new(registry.clone(), client.clone(), settings);
        orchestrator.watch_fleet(poller.handle());
        if let Some(metrics) = &config.metrics {
            orchestrator.use_prometheus(crate::analysis::Prometheus::new(metrics.clone())?);
        }
        // Beside the registry it guards: one process drives that registry's rollouts.
        let db = config.db_path();
        orchestrator.lock_data_dir(&db.with_file_name(format!(
            "{}.drive.lock",
            db.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "parley.db".into())
        )));
        let interrupted = orchestrator.recover().await?;
        let refresher = spawn_refresher(&orchestrator, Arc::clone(&poller), stop.subscribe());
        let router = crate::routing::Router::open(
            registry.clone(),
            poller.handle(),
            orchestrator.clone(),
            config.routing.clone(),
        )
        .await?;
        let mut discovery = discovery;
        discovery.push(router.spawn(poller.events(), stop.subscribe()));
        discovery.push(crate::freeze::spawn_guard(registry.clone(), orchestrator.clone(), stop.subscribe()));
        if !config.notify.is_empty() {
            discovery.push(crate::notify::spawn(
                config.notify.clone(),
                orchestrator.subscribe(),
                router.changes(),
                stop.subscribe(),
            ));
        }
        if let Some(addr) = config.routing.listen {
            discovery.push(crate::routing::http::serve(router.clone(), addr, stop.subscribe()).await?);
        }

        let services = Arc::new(Services {
            grammar,
            topology: poller.handle(),
            poller,
            registry,
            orchestrator,
            client,
            anonymous,
            thresholds,
            llm,
            router,
        });
        Ok(Parley { services, interrupted, demo, advertised, stop, poll_task, refresher, discovery })
    }

    pub fn services(&self) -> &Arc<Services> {
        &self.services
    }

    /// A new conversation for `actor`.
    pub fn session(&self, actor: Actor) -> Session {
        Session::new(Arc::clone(&self.services), actor).with_interrupted(&self.interrupted)
    }

    /// Deployments that a previous Parley left mid-way; they are paused and wait for
    /// the operator to resume or roll them back.
    pub fn interrupted(&self) -> &[DeploymentRecord] {
        &self.interrupted
    }

    /// Lets running rollouts finish, then stops the poller and the demo fleet.
    pub async fn shutdown(self) {
        self.services.orchestrator.wait_settled().await;
        let _ = self.stop.send(true);
        let _ = self.poll_task.await;
        let _ = self.refresher.await;
        for task in self.discovery {
            let _ = task.await;
        }
        if let Some(path) = &self.advertised {
            let _ = std::fs::remove_file(path);
        }
        if let Some(demo) = self.demo {
            demo.shutdown().await;
        }
    }
}

/// Refreshes the model as soon as a rollout changes agents, rather than at the next
/// poll, so that what an operator reads right after a rollout is already true.
fn spawn_refresher(
    orchestrator: &Orchestrator,
    poller: Arc<Poller>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    use crate::orchestrate::RolloutEvent;
    use tokio::sync::broadcast::error::RecvError;
    let mut events = orchestrator.subscribe();
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                e = events.recv() => e,
            };
            match event {
                Ok(
                    RolloutEvent::GateEvaluated { .. }
                    | RolloutEvent::Finished { .. }
                    | RolloutEvent::AgentFailed { .. },
                )
                | Err(RecvError::Lagged(_)) => {
                    poller.refresh().await;
                }
                Ok(_) => {}
                Err(RecvError::Closed) => return,
            }
        }
    })
}

type DemoStart = (Vec<InventoryEntry>, Option<DemoFleet>, Option<std::path::PathBuf>);

/// Starts the embedded demo fleet, or joins the one another Parley process on this
/// data directory already runs (so `parley ask` in a second terminal acts on the
/// fleet the first one shows). Agent state lives beside the registry either way.
async fn start_demo(config: &Config, faults: &str, client: &AgentClient) -> Result<DemoStart, StartError> {
    let state_dir = config.demo_state_dir();
    let advert = state_dir.join("inventory.toml");
    if let Some(entries) = running_demo(&advert, client).await {
        tracing::info!(inventory = %advert.display(), "joining the demo fleet of another Parley process");
        return Ok((entries, None, None));
    }
    let options = DemoOptions {
        token: config.agent_token.clone(),
        state_dir: Some(state_dir),
        faults: FaultSpec::parse(faults)?,
        install_delay: Some(Duration::from_millis(40)),
        transition_delay: Some(Duration::from_millis(300)),
    };
    let fleet = DemoFleet::start(options).await?;
    let entries = fleet.inventory();
    let advertised = match std::fs::write(&advert, Inventory::to_toml(&entries)) {
        Ok(()) => Some(advert),
        Err(e) => {
            tracing::warn!(path = %advert.display(), error = %e, "could not advertise the demo fleet");
            None
        }
    };
    Ok((entries, Some(fleet), advertised))
}

async fn running_demo(advert: &Path, client: &AgentClient) -> Option<Vec<InventoryEntry>> {
    let entries = Inventory::load(advert).ok()?;
    let first = entries.first()?;
    client.status(&first.endpoint).await.ok()?;
    Some(entries)
}
