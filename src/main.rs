//! The `parley` binary: arguments -> [`Config`] -> a front-end. Nothing else lives here.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use parley::app::Parley;
use parley::config::{Config, FleetSource};
use parley::ops::Actor;
use parley::ui;

#[derive(Parser)]
#[command(name = "parley", version, about = "Talk to your fleet: a conversational operations assistant")]
struct Cli {
    /// Configuration file (default: ~/.config/parley/parley.toml when it exists).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where the registry, history, logs and demo agent state live.
    #[arg(long, global = true, value_name = "DIR", env = "PARLEY_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The registry database (default: <data-dir>/parley.db).
    #[arg(long, global = true, value_name = "FILE")]
    db: Option<PathBuf>,
    /// A directory of intent files replacing the built-in ones.
    #[arg(long, global = true, value_name = "DIR")]
    intents: Option<PathBuf>,
    /// Poll the agents of this inventory file instead of starting the demo fleet.
    #[arg(long, global = true, value_name = "FILE")]
    fleet: Option<PathBuf>,
    /// Faults for the embedded demo fleet, e.g. `error-spike:auth-filter@2.1.0/region:eu-west`.
    #[arg(long, global = true, value_name = "SPEC")]
    demo_faults: Option<String>,
    /// Seconds each rollout step bakes before its health gate.
    #[arg(long, global = true, value_name = "SECS")]
    bake_secs: Option<f64>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Chat in a line-oriented terminal session (the default).
    Repl,
    /// Say one thing and exit; non-zero exit when it is infeasible or fails.
    Ask {
        /// Confirm a risky operation without asking.
        #[arg(long, short)]
        yes: bool,
        /// Print the reply as JSON.
        #[arg(long)]
        json: bool,
        #[arg(required = true, num_args = 1.., value_name = "UTTERANCE")]
        words: Vec<String>,
    },
    /// Print the parsed operation of an utterance; nothing is executed.
    Parse {
        /// Print JSON (the operation contract); the only format for now.
        #[arg(long)]
        json: bool,
        #[arg(required = true, num_args = 1.., value_name = "UTTERANCE")]
        words: Vec<String>,
    },
    /// Read one utterance per line from standard input and answer each.
    Chat {
        /// One JSON object per turn (the operation contract).
        #[arg(long)]
        json: bool,
    },
    /// Language-model fallback tools.
    Llm {
        #[command(subcommand)]
        command: LlmCommand,
    },
    /// Fleet tools.
    Fleet {
        #[command(subcommand)]
        command: FleetCommand,
    },
}

#[derive(Subcommand)]
enum LlmCommand {
    /// Tell whether the configured endpoint answers and which structured-output mode it supports.
    Check,
}

#[derive(Subcommand)]
enum FleetCommand {
    /// Serve the 48 demo agents on loopback until interrupted, for another Parley
    /// (`--fleet FILE`) or for trying the agent protocol by hand.
    Demo {
        /// Write the inventory of the running agents here.
        #[arg(long, value_name = "FILE")]
        inventory_out: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn config_from(cli: &Cli) -> anyhow::Result<Config> {
    let mut config = Config::load(cli.config.as_deref())?;
    if let Some(d) = &cli.data_dir {
        config.data_dir = d.clone();
    }
    if let Some(db) = &cli.db {
        config.db = Some(db.clone());
    }
    if let Some(i) = &cli.intents {
        config.intents_dir = Some(i.clone());
    }
    if let Some(f) = &cli.fleet {
        config.fleet = FleetSource::Inventory(f.clone());
    }
    if let Some(spec) = &cli.demo_faults {
        config.fleet = FleetSource::Demo { faults: spec.clone() };
    }
    if let Some(b) = cli.bake_secs {
        anyhow::ensure!((0.0..=3600.0).contains(&b), "--bake-secs must be between 0 and 3600");
        config.bake = Duration::from_secs_f64(b);
    }
    Ok(config)
}

/// Logs go to a file in the data directory, never to the terminal the operator reads.
fn init_logging(config: &Config) -> anyhow::Result<tracing_appender::non_blocking::WorkerGuard> {
    let dir = config.log_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating the log directory {}", dir.display()))?;
    let appender = tracing_appender::rolling::never(&dir, "parley.log");
    let (writer, guard) = tracing_appender::non_blocking(appender);
    let filter = tracing_subscriber::EnvFilter::try_from_env("PARLEY_LOG").unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt().with_writer(writer).with_ansi(false).with_env_filter(filter).init();
    Ok(guard)
}

async fn run(cli: Cli) -> anyhow::Result<bool> {
    let config = config_from(&cli)?;
    let _log_guard = init_logging(&config)?;

    if let Some(Command::Fleet { command: FleetCommand::Demo { inventory_out } }) = &cli.command {
        return serve_demo(&config, inventory_out.as_deref()).await;
    }

    if let Some(Command::Llm { command: LlmCommand::Check }) = &cli.command {
        return llm_check(&config).await;
    }

    let parley = Parley::start(&config).await.context("starting Parley")?;
    let result = match cli.command {
        None | Some(Command::Repl) => {
            ui::repl::repl(&parley, &config, Actor::local("repl")).await.context("terminal")?;
            true
        }
        Some(Command::Ask { yes, json, words }) => {
            let options = ui::ask::AskOptions { yes, json };
            ui::ask::ask(&parley, Actor::local("ask"), &words.join(" "), &options).await?
        }
        Some(Command::Parse { json: _, words }) => {
            println!("{}", ui::json::parse(&parley, &words.join(" ")));
            true
        }
        Some(Command::Chat { json }) => {
            if json {
                ui::json::chat(&parley, Actor::local("chat-json")).await?;
            } else {
                ui::json::chat_text(&parley, Actor::local("chat")).await?;
            }
            true
        }
        Some(Command::Fleet { .. }) | Some(Command::Llm { .. }) => true,
    };
    parley.shutdown().await;
    Ok(result)
}

/// `parley llm check`: exit 0 when the endpoint answers, 1 when it does not.
async fn llm_check(config: &Config) -> anyhow::Result<bool> {
    let Some(settings) = &config.llm else {
        println!("No language model is configured (add an [llm] section to the config file).");
        return Ok(false);
    };
    let llm = parley::llm::Llm::new(settings)?;
    match llm.check().await {
        Ok(report) => {
            println!("{report}");
            Ok(true)
        }
        Err(e) => {
            println!("{} does not answer (model {}): {e}", settings.base_url, settings.model);
            Ok(false)
        }
    }
}

async fn serve_demo(config: &Config, inventory_out: Option<&std::path::Path>) -> anyhow::Result<bool> {
    let faults = match &config.fleet {
        FleetSource::Demo { faults } => faults.clone(),
        FleetSource::Inventory(_) => String::new(),
    };
    let options = parley::agent::demo::DemoOptions {
        token: config.agent_token.clone(),
        state_dir: Some(config.demo_state_dir()),
        faults: parley::agent::faults::FaultSpec::parse(&faults)?,
        install_delay: Some(Duration::from_millis(40)),
        transition_delay: Some(Duration::from_millis(300)),
    };
    let fleet = parley::agent::demo::DemoFleet::start(options).await?;
    let inventory = parley::topology::inventory::Inventory::to_toml(&fleet.inventory());
    match inventory_out {
        Some(path) => {
            std::fs::write(path, &inventory).with_context(|| format!("writing {}", path.display()))?;
            eprintln!(
                "Serving {} demo agents; inventory in {}. Ctrl-C stops them.",
                fleet.inventory().len(),
                path.display()
            );
        }
        None => print!("{inventory}"),
    }
    tokio::signal::ctrl_c().await?;
    fleet.shutdown().await;
    Ok(true)
}
